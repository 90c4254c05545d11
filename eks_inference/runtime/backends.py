"""Processor backends behind one interface: load a compiled artifact, run padded batches.

``forward`` takes int64 numpy arrays already padded to a compiled (batch, sequence) shape and returns the
task head's outputs as fp32 numpy arrays. Backends differ only in how graphs are loaded and where tensors
live:

* ``cpu`` — one TorchScript graph that accepts any shape; intra-op threads per replica; bf16 weights when
  the artifact was compiled bf16 (the compiler checks bf16 against fp32 before it writes the artifact).
* ``cuda`` — the same on a GPU, fp16 or bf16.
* ``neuron`` — one graph per compiled shape (``torch_neuronx.trace`` output); ``torch_neuronx`` is
  imported only here, when the backend is built, because it exists only in the Inferentia image.
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 instructions (AVX512-BF16/AMX on x86, BF16 on Arm, e.g. Graviton3)."""
    try:
        if hasattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported") and torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return True
    except Exception:  # pragma: no cover - depends on the torch build
        pass
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16", "bf16"))


def _jit_load(path: Path, device: str | None) -> Any:
    """``torch.jit.load``: deprecated in favour of torch.export, but torch-neuronx artifacts are TorchScript."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location=device) if device else torch.jit.load(str(path))


def effective_dtype(backend: str, requested: str, *, bf16_native: bool, allow_emulated_bf16: bool = False,
                    ) -> tuple[str, str | None]:
    """The dtype a replica serves, and why it differs from the requested one (None when it does not).

    ``bf16`` in the config means "bf16 where the processor runs it natively": Graviton3 and x86 CPUs with
    AVX512-BF16/AMX do; elsewhere torch emulates it several times slower than fp32 (measured 20 vs 130
    inputs/s on an AVX2 EPYC), so a CPU replica there serves fp32 unless ``allow_emulated_bf16`` is set
    (to check bf16 numerics on a development machine). fp16 is for GPUs only.
    """
    if backend != "cpu":
        return requested, None
    if requested == "fp16":
        raise ValueError("user_config dtype: 'fp16' is not served on CPU processors; use fp32 or bf16")
    if requested == "bf16" and not bf16_native and not allow_emulated_bf16:
        return "fp32", "this CPU has no bf16 instructions (bf16 would be emulated, slower than fp32)"
    return requested, None


class Backend:
    """Base: graphs keyed by (batch, seq); ``None`` in a key means any size."""

    name = "base"
    compiled = False
    """Whether the graphs are ``torch.compile`` output (:func:`compile_cpu_backend`) rather than the artifact's."""

    def __init__(self, artifact_dir: Path, manifest: dict[str, Any], *, num_threads: int = 1) -> None:
        self.artifact_dir = artifact_dir
        self.manifest = manifest
        self.dtype = str(manifest["dtype"])
        self.graphs: dict[tuple[int | None, int | None], Any] = {}
        self._lock = threading.Lock()
        self.set_num_threads(num_threads)
        for g in manifest["graphs"]:
            self.graphs[(g.get("batch"), g.get("seq"))] = self._load(artifact_dir / g["file"])

    def _load(self, path: Path) -> Any:
        raise NotImplementedError

    def set_num_threads(self, n: int) -> None:
        torch.set_num_threads(n)

    def graph_for(self, batch: int, seq: int) -> Any:
        for key in ((batch, seq), (batch, None), (None, seq), (None, None)):
            if key in self.graphs:
                return self.graphs[key]
        raise ValueError(f"the artifact has no graph for shape ({batch}, {seq}); "
                         f"compiled shapes: {sorted(self.graphs, key=str)}")

    def _to_device(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a)

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                token_type_ids: np.ndarray) -> tuple[np.ndarray, ...]:
        graph = self.graph_for(*input_ids.shape)
        with self._lock, torch.inference_mode():
            outs = graph(self._to_device(input_ids), self._to_device(attention_mask),
                         self._to_device(token_type_ids))
            if isinstance(outs, torch.Tensor):
                outs = (outs,)
            return tuple(o.float().cpu().numpy() for o in outs)


class CpuBackend(Backend):
    name = "cpu"

    def _load(self, path: Path) -> Any:
        graph = _jit_load(path, "cpu")
        graph.eval()
        return graph


class CudaBackend(Backend):
    name = "cuda"

    def __init__(self, artifact_dir: Path, manifest: dict[str, Any], *, num_threads: int = 1) -> None:
        if not torch.cuda.is_available():
            raise RuntimeError("processor gpu needs CUDA, but torch.cuda.is_available() is False on this node")
        super().__init__(artifact_dir, manifest, num_threads=num_threads)

    def _load(self, path: Path) -> Any:
        graph = _jit_load(path, "cuda")
        graph.eval()
        return graph

    def _to_device(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to("cuda")  # ids are a few KB: pinning per call would cost more


class NeuronBackend(Backend):
    name = "neuron"

    def _load(self, path: Path) -> Any:
        try:
            import torch_neuronx  # noqa: F401  (registers the Neuron ops that jit.load needs)
        except ImportError as e:
            raise RuntimeError("processor inferentia needs torch-neuronx (the Inferentia image has it); "
                               f"import failed: {e}") from None
        return _jit_load(path, None)

    def graph_for(self, batch: int, seq: int) -> Any:
        if (batch, seq) not in self.graphs:
            raise ValueError(f"Neuron graphs run only their compiled shapes; ({batch}, {seq}) is not one of "
                             f"{sorted(self.graphs, key=str)}")
        return self.graphs[(batch, seq)]


BACKENDS: dict[str, type[Backend]] = {"cpu": CpuBackend, "cuda": CudaBackend, "neuron": NeuronBackend}


def load_backend(artifact_dir: Path, manifest: dict[str, Any], *, num_threads: int = 1) -> Backend:
    backend = manifest["backend"]
    if backend not in BACKENDS:
        raise ValueError(f"artifact backend {backend!r} is unknown; expected one of {sorted(BACKENDS)}")
    return BACKENDS[backend](artifact_dir, manifest, num_threads=num_threads)


def compile_cpu_backend(backend: Backend, model_dir: Path, task: Any) -> Backend:
    """``backend`` with its TorchScript graph replaced by ``torch.compile`` of the eager task head, in the
    artifact's dtype (``serving.cpu_tuning.torch_compile``; AWS's Graviton guide recommends it for PyTorch 2.3.1+).

    Dynamo cannot trace a loaded TorchScript module (it asks for the Python source), so the eager head is loaded from
    the same verified weights directory the artifact was compiled from; the artifact's own check against fp32 still
    stands for the dtype, and ``verify`` checks the compiled replica's answers. ``dynamic=True``: one graph serves
    every (batch, sequence) bucket instead of one recompile per shape; the replica's warm-up pays the compile.
    """
    from eks_inference.runtime.tasks import load_task_module

    if backend.name != "cpu":
        raise ValueError(f"torch_compile applies to cpu backends only, not {backend.name!r}")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if backend.dtype not in dtypes:
        raise ValueError(f"torch_compile: artifact dtype {backend.dtype!r} is not served on CPU; use fp32 or bf16")
    eager = load_task_module(model_dir, task).to(dtype=dtypes[backend.dtype]).eval()
    backend.graphs = {(None, None): torch.compile(eager, dynamic=True)}
    backend.compiled = True
    return backend

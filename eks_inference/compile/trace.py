"""Trace or compile a Hugging Face encoder for one processor, check it against fp32, write an artifact.

* cpu / cuda: ``torch.jit.trace`` of the task head in the serving dtype. BERT-family traces accept any
  (batch, sequence) shape; that is checked here, at the smallest and largest bucket, before the artifact
  is written. One graph serves every bucket.
* neuron: ``torch_neuronx.trace`` once per (batch, sequence) bucket — Neuron runs fixed shapes only.
  Imported lazily: torch-neuronx exists only in the Inferentia image.

Every artifact is checked against the eager fp32 model on real tokenized text: cosine similarity per row
must reach :data:`MIN_COSINE` (0.9999 in fp32, 0.99 in bf16/fp16), otherwise nothing is written and the
error says which dtype to use instead.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eks_inference.artifacts.resolve import MANIFEST_FORMAT, ArtifactRequest, hash_tree, sdk_versions
from eks_inference.config import DType, Task
from eks_inference.runtime.engine import Encoder, Item
from eks_inference.runtime.tasks import load_task_module

log = logging.getLogger(__name__)

MIN_COSINE = {DType.FP32: 0.9999, DType.BF16: 0.99, DType.FP16: 0.99}
TORCH_DTYPES = {DType.FP32: torch.float32, DType.BF16: torch.bfloat16, DType.FP16: torch.float16}

SAMPLE_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Amazon EKS runs Kubernetes without installing or operating a control plane.",
    "Inferentia2 chips run transformer models at low cost per inference.",
    "A short one.",
    "Ray Serve batches requests dynamically to keep accelerators busy while latency stays low, "
    "which matters most when many small requests arrive at once from many clients.",
    "Graviton processors offer good price performance for CPU inference with bf16 support.",
    "How many tokens does this sentence have after word-piece tokenization?",
    "Dynamic batching trades a little latency for a lot of throughput.",
)
SAMPLE_PAIRS = tuple(("what is it?", t) for t in SAMPLE_TEXTS)


class CompileError(RuntimeError):
    """The compiled graph is wrong or cannot be built; nothing was written."""


def sample_items(task: Task, n: int) -> list[Item]:
    src: Sequence[Item] = SAMPLE_PAIRS if task is Task.QUESTION_ANSWERING else SAMPLE_TEXTS
    return [src[i % len(src)] for i in range(n)]


def example_batch(encoder: Encoder, task: Task, batch: int, seq: int) -> tuple[torch.Tensor, ...]:
    """Real tokenized text padded to exactly (batch, seq); rows shorter than ``seq`` carry padding."""
    enc = encoder.encode_exact(sample_items(task, batch), batch, seq)
    return (torch.from_numpy(enc.input_ids), torch.from_numpy(enc.attention_mask),
            torch.from_numpy(enc.token_type_ids))


def min_row_cosine(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Smallest per-row cosine similarity over all outputs (logits compared as vectors)."""
    worst = 1.0
    for x, y in zip(a, b, strict=True):
        x2 = x.reshape(x.shape[0], -1).astype(np.float64)
        y2 = y.reshape(y.shape[0], -1).astype(np.float64)
        num = (x2 * y2).sum(1)
        den = np.linalg.norm(x2, axis=1) * np.linalg.norm(y2, axis=1)
        cos = np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)
        worst = min(worst, float(cos.min()))
    return worst


def _np(outs: Any) -> list[np.ndarray]:
    if isinstance(outs, torch.Tensor):
        outs = (outs,)
    return [o.detach().float().cpu().numpy() for o in outs]


def _check_shapes(run: Callable[[tuple[torch.Tensor, ...]], Any], eager: torch.nn.Module, encoder: Encoder,
                  task: Task, shapes: Sequence[tuple[int, int]], dtype: DType) -> float:
    worst = 1.0
    for b, s in shapes:
        ex = example_batch(encoder, task, b, s)
        with torch.inference_mode():
            ref = _np(eager(*ex))
            got = _np(run(ex))
        cos = min_row_cosine(ref, got)
        worst = min(worst, cos)
        if cos < MIN_COSINE[dtype]:
            hint = "; serve fp32 instead" if dtype is not DType.FP32 else "; the model may not be traceable"
            raise CompileError(f"{dtype.value} graph disagrees with eager fp32 at shape ({b}, {s}): "
                               f"min cosine {cos:.6f} < {MIN_COSINE[dtype]}{hint}")
    return worst


def _trace_torchscript(eager: torch.nn.Module, encoder: Encoder, task: Task, dtype: DType, device: str,
                       req: ArtifactRequest, out: Path, writer: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import copy

    model = copy.deepcopy(eager).to(device=device, dtype=TORCH_DTYPES[dtype]).eval()
    b0 = min(2, req.batch_buckets[-1])
    s0 = min(32, req.seq_buckets[-1])
    ex = tuple(t.to(device) for t in example_batch(encoder, task, b0, s0))
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export, but it is what torch-neuronx produces and
        # what jit.load reads on every backend; the tracer's notes on Python control flow are expected.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        graph = torch.jit.trace(model, ex, check_trace=False, strict=False)
    shapes = sorted({(req.batch_buckets[0], req.seq_buckets[0]), (req.batch_buckets[-1], req.seq_buckets[-1]),
                     (min(4, req.batch_buckets[-1]), req.seq_buckets[len(req.seq_buckets) // 2])})
    worst = _check_shapes(lambda x: graph(*(t.to(device) for t in x)), eager, encoder, task, shapes, dtype)
    rel = f"{writer}/graph.pt"
    (out / writer).mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(graph, str(out / rel))
    return [{"file": rel, "batch": None, "seq": None}], {"min_cosine_vs_fp32": worst, "checked_shapes": shapes}


def neuron_cast_args(dtype: DType, auto_cast: str | None) -> list[str]:
    """neuronx-cc flags for ``dtype``: by default fp32 casts nothing and bf16/fp16 cast all (``--auto-cast all``);
    ``serving.auto_cast`` (none, matmult, all) overrides which operations the compiler may cast, to the dtype's
    type (fp32 to bf16, the compiler's default cast type). The compiled artifact is still checked against fp32."""
    default = {DType.FP32: "none", DType.BF16: "all", DType.FP16: "all"}[dtype]
    mode = auto_cast or default
    if mode == "none":
        return ["--auto-cast", "none"]
    return ["--auto-cast", mode, "--auto-cast-type", "fp16" if dtype is DType.FP16 else "bf16"]


def _compile_neuron(eager: torch.nn.Module, encoder: Encoder, task: Task, dtype: DType, req: ArtifactRequest,
                    out: Path, writer: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    try:
        import torch_neuronx
    except ImportError as e:
        raise CompileError("compiling for inferentia needs torch-neuronx (present in the Inferentia image); "
                           f"import failed: {e}") from None
    cast = neuron_cast_args(dtype, req.auto_cast)
    graphs: list[dict[str, Any]] = []
    worst = 1.0
    (out / writer).mkdir(parents=True, exist_ok=True)
    for b in req.batch_buckets:
        for s in req.seq_buckets:
            ex = example_batch(encoder, task, b, s)
            t0 = time.perf_counter()
            graph = torch_neuronx.trace(eager, ex, compiler_args=cast)
            log.info("neuron graph (%d, %d) compiled in %.1f s", b, s, time.perf_counter() - t0)
            def run(x: tuple[torch.Tensor, ...], g: Any = graph) -> Any:
                return g(*x)

            worst = min(worst, _check_shapes(run, eager, encoder, task, [(b, s)], dtype))
            rel = f"{writer}/graph_b{b}_s{s}.pt"
            torch.jit.save(graph, str(out / rel))
            graphs.append({"file": rel, "batch": b, "seq": s})
    return graphs, {"min_cosine_vs_fp32": worst, "checked_shapes": [[g["batch"], g["seq"]] for g in graphs]}


def compile_artifact(*, model_dir: Path, out_dir: Path, writer: str, request: ArtifactRequest,
                     weights_digest: str, cache_key: str) -> dict[str, Any]:
    """Write graphs under ``out_dir/writer/`` and return the artifact manifest (not yet written)."""
    t0 = time.perf_counter()
    task, dtype = Task(request.task), DType(request.dtype)
    backend = request.backend
    eager = load_task_module(model_dir, task, attn_implementation="eager" if backend == "neuron" else "sdpa")
    encoder = Encoder(model_dir, max_seq_length=request.seq_buckets[-1], pairs=task is Task.QUESTION_ANSWERING)
    if backend == "cpu":
        graphs, checks = _trace_torchscript(eager, encoder, task, dtype, "cpu", request, out_dir, writer)
    elif backend == "cuda":
        if not torch.cuda.is_available():
            raise CompileError("compiling for gpu needs CUDA; run it on a GPU node (or let the replica do it)")
        graphs, checks = _trace_torchscript(eager, encoder, task, dtype, "cuda", request, out_dir, writer)
    elif backend == "neuron":
        graphs, checks = _compile_neuron(eager, encoder, task, dtype, request, out_dir, writer)
    else:
        raise CompileError(f"backend {backend!r} is unknown; expected cpu, cuda or neuron")
    return {
        "format": MANIFEST_FORMAT,
        "kind": "artifact",
        "cache_key": cache_key,
        "model": {"name": request.model, "revision": request.revision, "task": task.value,
                  "weights_digest": weights_digest},
        "processor": request.processor,
        "backend": backend,
        "dtype": dtype.value,
        "batch_buckets": list(request.batch_buckets),
        "seq_buckets": list(request.seq_buckets),
        "graphs": graphs,
        "versions": {**request.versions, **sdk_versions(backend)},
        "checks": checks,
        "compile_seconds": round(time.perf_counter() - t0, 3),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": hash_tree(out_dir),
    }

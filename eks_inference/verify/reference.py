"""Reference outputs for the probe set, computed in fp32 eager torch from the same weights.

Computing runs the project's own :class:`~eks_inference.runtime.engine.Engine` — the same tokenizer, the
same truncation at ``max_seq_length``, the same pooling heads and post-processing a replica runs — on an
eager fp32 module instead of a compiled graph, one input at a time and without padding. Whatever differs
between a target and this reference is then the target's compilation, dtype, batching or packaging.

Needs the serve extra (torch, transformers). Every import of it is made where it is used and turned into
:class:`~eks_inference.verify.stored.ReferenceUnavailable` with the install hint when it fails, so the
load-test image, which ships this module without torch, falls back to stored references. Storing and
reading them: :mod:`eks_inference.verify.stored`.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from eks_inference.config import Task
from eks_inference.verify.probes import Probe, probes_for
from eks_inference.verify.stored import SERVE_EXTRA_HINT, Reference, ReferenceUnavailable, write_reference

log = logging.getLogger(__name__)

DEFAULT_LENGTHS = (32, 64, 128, 256, 384, 512)
"""Serving lengths ``publish`` stores references for (up to the model's position limit)."""


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def _unavailable() -> ReferenceUnavailable:
    return ReferenceUnavailable(f"computing the reference needs torch and transformers; {SERVE_EXTRA_HINT}")


def _versions() -> dict[str, str]:
    out = {"dtype": "fp32", "mode": "eager", "attention": "eager"}
    for dist in ("torch", "transformers"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


class EagerBackend:
    """The backend interface the engine drives, over an eager fp32 module; memoised per token sequence, so
    identical inputs at several serving lengths are computed once."""

    name = "eager-fp32"

    def __init__(self, module: Any) -> None:
        self.module = module
        self._lock = threading.Lock()
        self._memo: dict[bytes, tuple[Any, ...]] = {}

    def set_num_threads(self, n: int) -> None:  # the calling process keeps its own threads
        return None

    def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> tuple[Any, ...]:
        try:
            import torch
        except ImportError:
            raise _unavailable() from None
        key = input_ids.tobytes() + b"|" + attention_mask.tobytes() + b"|" + token_type_ids.tobytes()
        with self._lock:
            if key in self._memo:
                return self._memo[key]
            with torch.inference_mode():
                outs = self.module(torch.from_numpy(input_ids), torch.from_numpy(attention_mask),
                                   torch.from_numpy(token_type_ids))
            if isinstance(outs, torch.Tensor):
                outs = (outs,)
            result = tuple(o.float().cpu().numpy() for o in outs)
            self._memo[key] = result
            return result


def eager_module(model_dir: Path, task: Task) -> Any:
    """The task head of ``model_dir`` in fp32, eager attention, evaluation mode."""
    try:
        import transformers

        from eks_inference.runtime.tasks import load_task_module
    except ImportError:
        raise _unavailable() from None
    transformers.utils.logging.disable_progress_bar()
    return load_task_module(model_dir, task, attn_implementation="eager").float().eval()


class ReferenceModel:
    """One model loaded once in fp32; answers the probe set at any ``max_seq_length``."""

    def __init__(self, model_dir: Path, task: Task, *, weights_digest: str) -> None:
        self.model_dir = model_dir
        self.task = task
        self.weights_digest = weights_digest
        self.backend = EagerBackend(eager_module(model_dir, task))
        self.position_limit = self._position_limit(model_dir)

    @staticmethod
    def _position_limit(model_dir: Path) -> int:
        try:
            cfg = json.loads((model_dir / "config.json").read_text())
            return int(cfg.get("max_position_embeddings") or 512)
        except (OSError, ValueError):
            return 512

    def run(self, max_seq_length: int, probes: Sequence[Probe] | None = None) -> Reference:
        try:
            from eks_inference.runtime.engine import Engine
        except ImportError:
            raise _unavailable() from None
        probes = list(probes) if probes is not None else probes_for(self.task, max_seq_length)
        # batch 1 and a bucket for every length: no padding at all, whatever the serving buckets are
        engine = Engine(model_dir=self.model_dir, task=self.task, backend=cast(Any, self.backend),
                        batch_buckets=(1,), seq_buckets=tuple(range(1, max_seq_length + 1)),
                        max_seq_length=max_seq_length, max_batch_size=1)
        outputs, truncated = engine.run([p.item for p in probes])
        return Reference(task=self.task, max_seq_length=max_seq_length, weights_digest=self.weights_digest,
                         outputs=outputs, truncated=truncated, probe_ids=[p.id for p in probes],
                         basis="computed in-process (fp32, eager torch)", computed_with=_versions())


def load_reference_model(source: str, task: Task, *, cache_dir: str | Path,
                         endpoint_url: str | None = None) -> ReferenceModel:
    """Resolve (download and verify, for S3) the source's weights and load them in fp32."""
    if not torch_available():
        raise _unavailable()
    try:
        from eks_inference.artifacts.resolve import resolve_model
    except ImportError:
        raise _unavailable() from None
    model = resolve_model(source, cache_dir=cache_dir, endpoint_url=endpoint_url)
    return ReferenceModel(model.path, task, weights_digest=model.digest)


def infer_task(model_dir: Path) -> Task | None:
    """The task a Hugging Face directory's architecture implies (None when it does not say)."""
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    archs = [str(a) for a in cfg.get("architectures") or []]
    if any("ForSequenceClassification" in a for a in archs):
        return Task.CLASSIFICATION
    if any("ForQuestionAnswering" in a for a in archs):
        return Task.QUESTION_ANSWERING
    if (model_dir / "modules.json").is_file() or any(a.endswith("Model") for a in archs):
        return Task.EMBEDDING
    return None


def store_references(model_dir: Path, store_uri: str, *, task: Task, weights_digest: str,
                     lengths: Sequence[int] = DEFAULT_LENGTHS, endpoint_url: str | None = None) -> list[str]:
    """Compute and store references for each serving length the model allows; returns one line per length."""
    model = ReferenceModel(model_dir, task, weights_digest=weights_digest)
    lines = []
    for n in sorted({min(n, model.position_limit) for n in lengths}):
        uri, status = write_reference(model.run(n), store_uri, endpoint_url=endpoint_url)
        lines.append(f"{uri} ({status})")
    return lines


def references_for_publish(src: Path, uri: str, *, task: str | None, digest: str,
                           endpoint_url: str | None) -> tuple[str, ...]:
    """Reference outputs for the verification probes beside just-published weights, for every usual serving
    length (the load-test image has no torch; ``loadtest run --verify`` reads them there). Never raises: where
    torch is missing, the task cannot be told or computing fails, the one line says why none were stored."""
    if not torch_available():
        return (f"no reference outputs stored: {SERVE_EXTRA_HINT}, then publish again",)
    kind = Task(task) if task else infer_task(src)
    if kind is None:
        return ("no reference outputs stored: the task is unknown; publish again with --task",)
    try:
        lines = store_references(src, uri, task=kind, weights_digest=digest, endpoint_url=endpoint_url)
    except Exception as e:  # a directory that is not a loadable model still publishes; verify will say more
        return (f"no reference outputs stored: computing them failed ({type(e).__name__}: {e})",)
    for line in lines:
        log.info("reference outputs %s", line)
    return tuple(lines)

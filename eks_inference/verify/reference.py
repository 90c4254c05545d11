"""Reference outputs for the probe set: computed in fp32 eager torch, or read from next to the weights.

Computing runs the project's own :class:`~eks_inference.serving.engine.Engine` — the same tokenizer, the
same truncation at ``max_seq_length``, the same pooling heads and post-processing a replica runs — on an
eager fp32 module instead of a compiled graph, one input at a time and without padding. Whatever differs
between a target and this reference is then the target's compilation, dtype, batching or packaging.

The load-test image has no torch, so references are also stored next to the weights they were computed
from (``eks-inference publish`` and ``eks-inference verify --write-reference`` write them)::

    {model directory or s3 prefix}/.references/probes-v{VERSION}-{DIGEST16}/seq-{MAX_SEQ_LENGTH}/
        manifest.json        kind "reference": task, probe-set version, weights digest, files + sha256
        outputs-{writer}.json

The dot keeps them out of the model's own file table (``hash_tree`` skips dot paths), so writing them never
changes the weights digest, and out of what replicas download. The manifest is written create-only after
the outputs, as artifacts are: concurrent writers never overwrite each other and a reader never sees half
a reference. Every read checks the outputs file against the manifest's sha256.
"""

from __future__ import annotations

import importlib.metadata
import json
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from eks_inference.config import ConfigError, Task
from eks_inference.verify.probes import PROBE_SET_VERSION, Probe, probes_for

REFERENCE_FORMAT = "eks-inference.verify.reference"
REFERENCE_FORMAT_VERSION = 1
REFERENCE_DIR = ".references"
DEFAULT_LENGTHS = (32, 64, 128, 256, 384, 512)
"""Serving lengths ``publish`` stores references for (up to the model's position limit)."""
SERVE_EXTRA_HINT = "install the serve extra (pip install 'eks-inference[serve]') for torch and transformers"


class ReferenceUnavailable(Exception):
    """No reference can be had: no torch here and none stored; the message says how to get one."""


@dataclass(frozen=True, kw_only=True)
class Reference:
    task: Task
    max_seq_length: int
    weights_digest: str
    outputs: list[Any]
    truncated: list[bool]
    probe_ids: list[str]
    probe_set_version: int = PROBE_SET_VERSION
    basis: str = ""
    """How it was obtained, for the verdict: computed in-process, or the stored object's URI."""
    computed_with: dict[str, str] | None = None

    def to_doc(self) -> dict[str, Any]:
        return {
            "format": REFERENCE_FORMAT, "format_version": REFERENCE_FORMAT_VERSION,
            "probe_set_version": self.probe_set_version, "task": self.task.value,
            "max_seq_length": self.max_seq_length, "weights_digest": self.weights_digest,
            "computed_with": self.computed_with or {},
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "probes": [{"id": i, "output": o, "truncated": t}
                       for i, o, t in zip(self.probe_ids, self.outputs, self.truncated, strict=True)],
        }

    @staticmethod
    def from_doc(doc: Any, where: str) -> Reference:
        try:
            if doc["format"] != REFERENCE_FORMAT or doc["format_version"] != REFERENCE_FORMAT_VERSION:
                raise ValueError(f"format {doc.get('format')!r} version {doc.get('format_version')!r}")
            probes = doc["probes"]
            return Reference(task=Task(doc["task"]), max_seq_length=int(doc["max_seq_length"]),
                             weights_digest=str(doc["weights_digest"]),
                             outputs=[p["output"] for p in probes], truncated=[bool(p["truncated"]) for p in probes],
                             probe_ids=[str(p["id"]) for p in probes],
                             probe_set_version=int(doc["probe_set_version"]), basis=f"stored: {where}",
                             computed_with=dict(doc.get("computed_with") or {}))
        except (KeyError, TypeError, ValueError) as e:
            raise ReferenceUnavailable(f"{where} is not a readable reference ({type(e).__name__}: {e}); "
                                       "delete it and write it again (verify --write-reference)") from None


def reference_prefix(weights_digest: str, max_seq_length: int, version: int = PROBE_SET_VERSION) -> str:
    return f"{REFERENCE_DIR}/probes-v{version}-{weights_digest[:16]}/seq-{max_seq_length}"


# ---------------------------------------------------------------------------------------------------
# Sources: where the weights (and their stored references) are
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """A model source as ``verify`` sees it: its weights digest and where references live beside it."""

    uri: str
    digest: str
    store_uri: str | None
    """The model directory or S3 prefix; None for a bundled model (a package is no place to write)."""


def describe_source(uri: str, *, endpoint_url: str | None = None) -> Source:
    """Digest and reference location of ``uri`` without downloading weights (S3: the manifest only)."""
    from eks_inference.serving.artifacts import MANIFEST, bundled_model_path, files_digest, hash_tree, parse_manifest
    from eks_inference.serving.storage import open_store

    if uri.startswith("bundled:"):
        return Source(uri, files_digest(hash_tree(bundled_model_path(uri.removeprefix("bundled:")))), None)
    if uri.startswith("s3://"):
        store = open_store(uri, endpoint_url=endpoint_url)
        raw = store.read_bytes(MANIFEST)
        if raw is None:
            raise ConfigError(f"--source: no {MANIFEST} at {store.uri}; publish the model there first "
                              "(eks-inference publish MODEL_DIR --to s3://BUCKET --name NAME)")
        return Source(uri, files_digest(parse_manifest(raw, store.uri, kind="model")["files"]), store.uri)
    path = Path(uri.removeprefix("file://")).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"--source: {uri!r} is not a directory; give a model directory, an s3:// URI or "
                          "bundled:NAME")
    if (path / MANIFEST).is_file():
        m = parse_manifest((path / MANIFEST).read_bytes(), str(path), kind="model")
        return Source(uri, files_digest(m["files"]), str(path))
    return Source(uri, files_digest(hash_tree(path)), str(path))


# ---------------------------------------------------------------------------------------------------
# Computing (torch)
# ---------------------------------------------------------------------------------------------------

def torch_available() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def _versions() -> dict[str, str]:
    out = {"dtype": "fp32", "mode": "eager", "attention": "eager"}
    for dist in ("torch", "transformers"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


class ReferenceModel:
    """One model loaded once in fp32 eager mode; answers the probe set at any ``max_seq_length``.

    Identical token sequences (every probe shorter than the length, at several lengths) are computed once.
    """

    def __init__(self, model_dir: Path, task: Task, *, weights_digest: str) -> None:
        import transformers

        from eks_inference.serving.tasks import load_task_module

        transformers.utils.logging.disable_progress_bar()
        self.model_dir = model_dir
        self.task = task
        self.weights_digest = weights_digest
        self.module = load_task_module(model_dir, task, attn_implementation="eager").float().eval()
        self.position_limit = self._position_limit(model_dir)

    @staticmethod
    def _position_limit(model_dir: Path) -> int:
        try:
            cfg = json.loads((model_dir / "config.json").read_text())
            return int(cfg.get("max_position_embeddings") or 512)
        except (OSError, ValueError):
            return 512

    def run(self, max_seq_length: int, probes: Sequence[Probe] | None = None) -> Reference:
        from eks_inference.serving.engine import Engine

        probes = list(probes) if probes is not None else probes_for(self.task, max_seq_length)
        engine = Engine(model_dir=self.model_dir, task=self.task, backend=cast(Any, _EagerBackend(self.module)),
                        batch_buckets=(1,), seq_buckets=tuple(range(1, max_seq_length + 1)),
                        max_seq_length=max_seq_length, max_batch_size=1)
        outputs, truncated = engine.run([p.item for p in probes])
        return Reference(task=self.task, max_seq_length=max_seq_length, weights_digest=self.weights_digest,
                         outputs=outputs, truncated=truncated, probe_ids=[p.id for p in probes],
                         basis="computed in-process (fp32, eager torch)", computed_with=_versions())


class _EagerBackend:
    """The backend interface the engine drives, over an eager fp32 module; memoised per token sequence."""

    name = "eager-fp32"

    def __init__(self, module: Any) -> None:
        self.module = module
        self._lock = threading.Lock()
        self._memo: dict[bytes, tuple[Any, ...]] = {}

    def set_num_threads(self, n: int) -> None:  # the caller's process keeps its own threads
        return None

    def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> tuple[Any, ...]:
        import torch

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


def load_reference_model(source: str, task: Task, *, cache_dir: str | Path,
                         endpoint_url: str | None = None) -> ReferenceModel:
    """Resolve (download and verify, for S3) the source's weights and load them in fp32."""
    if not torch_available():
        raise ReferenceUnavailable(f"computing the reference needs torch and transformers; {SERVE_EXTRA_HINT}")
    from eks_inference.serving.artifacts import resolve_model

    model = resolve_model(source, cache_dir=cache_dir, endpoint_url=endpoint_url)
    return ReferenceModel(model.path, task, weights_digest=model.digest)


# ---------------------------------------------------------------------------------------------------
# Storing and reading
# ---------------------------------------------------------------------------------------------------

def write_reference(ref: Reference, store_uri: str, *, endpoint_url: str | None = None) -> tuple[str, str]:
    """Store ``ref`` beside the weights at ``store_uri``; returns (URI, ``written`` | ``already-stored``).

    Create-only: an existing reference for the same probe set, weights and length is kept (recomputing
    one elsewhere differs only in the last float bits).
    """
    from eks_inference.serving.artifacts import MANIFEST, MANIFEST_FORMAT, sha256_bytes
    from eks_inference.serving.storage import join, open_store

    store = open_store(join(store_uri, reference_prefix(ref.weights_digest, ref.max_seq_length)),
                       endpoint_url=endpoint_url)
    if store.read_bytes(MANIFEST) is not None:
        return store.uri, "already-stored"
    data = json.dumps(ref.to_doc(), separators=(",", ":"), allow_nan=False).encode()
    name = f"outputs-{uuid.uuid4().hex[:12]}.json"
    if not store.put_if_absent(name, data):
        raise ConfigError(f"{store.uri_of(name)} exists already; retry")
    manifest = {"format": MANIFEST_FORMAT, "kind": "reference", "probe_set_version": ref.probe_set_version,
                "task": ref.task.value, "max_seq_length": ref.max_seq_length, "weights_digest": ref.weights_digest,
                "outputs": name, "files": {name: {"sha256": sha256_bytes(data), "size": len(data)}},
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if store.put_if_absent(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"):
        return store.uri, "written"
    store.delete(name)  # another writer's manifest won; ours is an orphan nobody points at
    return store.uri, "already-stored"


def read_reference(source: Source, task: Task, max_seq_length: int, *,
                   endpoint_url: str | None = None) -> Reference:
    """The stored reference for ``source`` at ``max_seq_length``, hash-checked; ReferenceUnavailable if none."""
    from eks_inference.serving.artifacts import MANIFEST, parse_manifest, sha256_bytes
    from eks_inference.serving.storage import join, open_store

    hint = (f"compute it where the serve extra is installed: eks-inference verify --url URL --source {source.uri} "
            "--write-reference (or republish the model with eks-inference publish)")
    if source.store_uri is None:
        raise ReferenceUnavailable(f"{source.uri} has no stored references and this machine cannot compute one; "
                                   f"{SERVE_EXTRA_HINT}")
    store = open_store(join(source.store_uri, reference_prefix(source.digest, max_seq_length)),
                       endpoint_url=endpoint_url)
    raw = store.read_bytes(MANIFEST)
    if raw is None:
        raise ReferenceUnavailable(
            f"no stored reference for probe set v{PROBE_SET_VERSION} at max_seq_length {max_seq_length} under "
            f"{store.uri}, and this machine cannot compute one ({SERVE_EXTRA_HINT}); {hint}")
    try:
        m = parse_manifest(raw, store.uri, kind="reference")
    except Exception as e:
        raise ReferenceUnavailable(f"{e}; {hint}") from None
    name = str(m.get("outputs") or "")
    data = store.read_bytes(name) if name in m["files"] else None
    if data is None or sha256_bytes(data) != m["files"][name]["sha256"]:
        raise ReferenceUnavailable(f"{store.uri_of(name or 'outputs')} is missing or does not match its manifest's "
                                   f"sha256; delete {store.uri} and write it again ({hint})")
    ref = Reference.from_doc(json.loads(data), store.uri_of(name))
    if (ref.task, ref.max_seq_length, ref.weights_digest, ref.probe_set_version) != (
            task, max_seq_length, source.digest, PROBE_SET_VERSION):
        raise ReferenceUnavailable(f"{store.uri_of(name)} is for another task, length, model or probe set; {hint}")
    return ref


def infer_task(model_dir: Path) -> Task | None:
    """The task a Hugging Face directory's architecture implies (None when it does not say)."""
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    archs = [str(a) for a in cfg.get("architectures") or []]
    if (model_dir / "modules.json").is_file() or any(a.endswith("Model") for a in archs):
        return Task.EMBEDDING
    if any("ForSequenceClassification" in a for a in archs):
        return Task.CLASSIFICATION
    if any("ForQuestionAnswering" in a for a in archs):
        return Task.QUESTION_ANSWERING
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

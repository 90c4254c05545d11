"""Reference outputs stored beside the weights, for machines without torch (the load-test image).

``eks-inference publish`` and ``eks-inference verify --write-reference`` compute them (see
:mod:`eks_inference.verify.reference`) and write them here::

    {model directory or s3 prefix}/.references/probes-v{VERSION}-{DIGEST16}/seq-{MAX_SEQ_LENGTH}/
        manifest.json        kind "reference": task, probe-set version, weights digest, files + sha256
        outputs-{writer}.json

keyed by probe-set version, weights digest and serving length. The dot keeps them out of the model's own
file table (``hash_tree`` skips dot paths), so writing them never changes the weights digest, and out of
what replicas download. The manifest is written create-only after the outputs, as compiled artifacts
are: concurrent writers never overwrite each other and a reader never sees half a reference. Every read
checks the outputs against the manifest's sha256.

Plain Python and boto3 only (through :mod:`eks_inference.storage`): this module ships in the
load-test image.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eks_inference.artifacts import manifests
from eks_inference.config import ConfigError, Task
from eks_inference.verify.probes import PROBE_SET_VERSION

REFERENCE_FORMAT = "eks-inference.verify.reference"
REFERENCE_FORMAT_VERSION = 1
REFERENCE_DIR = ".references"
SERVE_EXTRA_HINT = "install the serve extra (pip install 'eks-inference[serve]') for torch and transformers"


class ReferenceUnavailable(Exception):
    """No reference can be had: none computed here and none stored; the message says how to get one."""


@dataclass(frozen=True, kw_only=True)
class Reference:
    """The fp32 outputs and truncation flags of one probe set at one serving length."""

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


@dataclass(frozen=True)
class Source:
    """A model source as ``verify`` sees it: its weights digest and where references live beside it."""

    uri: str
    digest: str
    store_uri: str | None
    """The model directory or S3 prefix; None for a bundled model (a package is no place to write)."""


def describe_source(uri: str, *, endpoint_url: str | None = None) -> Source:
    """Digest and reference location of ``uri`` without downloading weights (S3: the manifest only)."""
    from eks_inference.storage import open_store

    if uri.startswith("bundled:"):
        try:
            from eks_inference.artifacts.resolve import bundled_model_path
        except ImportError:
            raise ConfigError(f"--source {uri}: a bundled model needs the serve extra; {SERVE_EXTRA_HINT}, or give "
                              "the published copy (s3://BUCKET/models/NAME/REV)") from None
        path = bundled_model_path(uri.removeprefix("bundled:"))
        return Source(uri, manifests.files_digest(manifests.hash_tree(path)), None)
    if uri.startswith("s3://"):
        store = open_store(uri, endpoint_url=endpoint_url)
        raw = store.read_bytes(manifests.MANIFEST)
        if raw is None:
            raise ConfigError(f"--source: no {manifests.MANIFEST} at {store.uri}; publish the model there first "
                              "(eks-inference publish MODEL_DIR --to s3://BUCKET --name NAME)")
        try:
            m = manifests.parse(raw, store.uri, kind="model")
        except manifests.ManifestError as e:
            raise ConfigError(f"--source: {e}; republish the model") from None
        return Source(uri, manifests.files_digest(m["files"]), store.uri)
    path = Path(uri.removeprefix("file://")).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"--source: {uri!r} is not a directory; give a model directory, an s3:// URI or "
                          "bundled:NAME")
    if (path / manifests.MANIFEST).is_file():
        try:
            m = manifests.parse((path / manifests.MANIFEST).read_bytes(), str(path), kind="model")
        except manifests.ManifestError as e:
            raise ConfigError(f"--source: {e}; republish the model") from None
        return Source(uri, manifests.files_digest(m["files"]), str(path))
    return Source(uri, manifests.files_digest(manifests.hash_tree(path)), str(path))


def write_reference(ref: Reference, store_uri: str, *, endpoint_url: str | None = None) -> tuple[str, str]:
    """Store ``ref`` beside the weights at ``store_uri``; returns (URI, ``written`` | ``already-stored``).

    Create-only: an existing reference for the same probe set, weights and length is kept (recomputing one
    elsewhere differs only in the last float bits).
    """
    from eks_inference.storage import join, open_store

    store = open_store(join(store_uri, reference_prefix(ref.weights_digest, ref.max_seq_length)),
                       endpoint_url=endpoint_url)
    if store.read_bytes(manifests.MANIFEST) is not None:
        return store.uri, "already-stored"
    data = json.dumps(ref.to_doc(), separators=(",", ":"), allow_nan=False).encode()
    name = f"outputs-{uuid.uuid4().hex[:12]}.json"
    if not store.put_if_absent(name, data):
        raise ConfigError(f"{store.uri_of(name)} exists already; retry")
    manifest = {"format": manifests.MANIFEST_FORMAT, "kind": "reference", "probe_set_version": ref.probe_set_version,
                "task": ref.task.value, "max_seq_length": ref.max_seq_length, "weights_digest": ref.weights_digest,
                "outputs": name, "files": {name: {"sha256": manifests.sha256_bytes(data), "size": len(data)}},
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    body = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    if store.put_if_absent(manifests.MANIFEST, body):
        return store.uri, "written"
    store.delete(name)  # another writer's manifest won; ours is an orphan nobody points at
    return store.uri, "already-stored"


def read_reference(source: Source, task: Task, max_seq_length: int, *,
                   endpoint_url: str | None = None) -> Reference:
    """The stored reference for ``source`` at ``max_seq_length``, hash-checked; ReferenceUnavailable if none."""
    from eks_inference.storage import join, open_store

    hint = (f"compute it where the serve extra is installed: eks-inference verify --url URL --source {source.uri} "
            "--write-reference (or republish the model with eks-inference publish)")
    if source.store_uri is None:
        raise ReferenceUnavailable(f"{source.uri} has no stored references and this machine cannot compute one; "
                                   f"{SERVE_EXTRA_HINT}")
    store = open_store(join(source.store_uri, reference_prefix(source.digest, max_seq_length)),
                       endpoint_url=endpoint_url)
    raw = store.read_bytes(manifests.MANIFEST)
    if raw is None:
        raise ReferenceUnavailable(
            f"no stored reference for probe set v{PROBE_SET_VERSION} at max_seq_length {max_seq_length} under "
            f"{store.uri}, and this machine cannot compute one ({SERVE_EXTRA_HINT}); {hint}")
    try:
        m = manifests.parse(raw, store.uri, kind="reference")
    except manifests.ManifestError as e:
        raise ReferenceUnavailable(f"{e}; {hint}") from None
    name = str(m.get("outputs") or "")
    data = store.read_bytes(name) if name in m["files"] else None
    if data is None or manifests.sha256_bytes(data) != m["files"][name]["sha256"]:
        raise ReferenceUnavailable(f"{store.uri_of(name or 'outputs')} is missing or does not match its manifest's "
                                   f"sha256; delete {store.uri} and write it again ({hint})")
    ref = Reference.from_doc(json.loads(data), store.uri_of(name))
    if (ref.task, ref.max_seq_length, ref.weights_digest, ref.probe_set_version) != (
            task, max_seq_length, source.digest, PROBE_SET_VERSION):
        raise ReferenceUnavailable(f"{store.uri_of(name)} is for another task, length, model or probe set; {hint}")
    return ref

"""Publish model directories and compiled artifacts to a repository (``s3://bucket/prefix`` or a directory).

A model revision and an artifact are immutable once published: their manifest is written create-only, so
publishing the same files again is a no-op and publishing *different* files under the same revision fails
with a message to bump the revision, instead of silently changing what running replicas verify against.

Publishing a model can also store the fp32 reference outputs of the verification probe set beside it: the
caller passes the function that does it (``eks-inference publish`` passes
:func:`eks_inference.verify.reference.references_for_publish`; compile sits below verify and never imports it).
Whatever that function reports lands in :attr:`Published.references`; it never fails the publish.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eks_inference.artifacts.resolve import (
    MANIFEST,
    artifact_prefix,
    bundled_model_path,
    model_manifest,
    parse_manifest,
    publish_once,
    upload_verified,
    verify_local,
)
from eks_inference.config import ConfigError
from eks_inference.storage import join, open_store, run_concurrently


@dataclass(frozen=True)
class Published:
    uri: str
    files: int
    bytes: int
    status: str
    """``published`` | ``already-published``."""
    references: tuple[str, ...] = field(default=())
    digest: str | None = None
    """The weights' digest (a model's ``weights_sha256`` pins it); None for an artifact."""
    """One line per stored reference (its URI and whether it was written), or why none were."""




def _manifest_bytes(m: dict[str, Any]) -> bytes:
    return json.dumps(m, indent=2, sort_keys=True).encode() + b"\n"


ReferencesFn = Callable[..., tuple[str, ...]]
"""``(model_dir, store_uri, *, task, digest, endpoint_url) -> lines``: stores reference outputs beside published
weights and says what it stored, or why it stored nothing."""


def publish_model(source: str | Path, repository_uri: str, *, name: str, revision: str, task: str | None = None,
                  endpoint_url: str | None = None, references: ReferencesFn | None = None) -> Published:
    """Upload a Hugging Face model directory (or ``bundled:NAME``) to ``{repo}/models/{name}/{revision}/``,
    then, when ``references`` is given (default none), store reference outputs beside it with that function."""
    src = bundled_model_path(str(source).removeprefix("bundled:")) if str(source).startswith("bundled:") \
        else Path(source).expanduser().resolve()
    if not src.is_dir():
        raise ConfigError(f"model directory {str(source)!r} does not exist; give a directory or bundled:NAME")
    m = model_manifest(src, name=name, revision=revision, task=task)
    store = open_store(join(repository_uri, "models", name, revision), endpoint_url=endpoint_url)
    existing = store.read_bytes(MANIFEST)
    total = sum(int(f["size"]) for f in m["files"].values())
    if existing is not None:
        old = parse_manifest(existing, store.uri, kind="model")
        if old.get("digest") == m["digest"]:
            refs = references(src, store.uri, task=task or old.get("task"), digest=m["digest"],
                              endpoint_url=endpoint_url) if references else ()
            return Published(store.uri, len(m["files"]), total, "already-published", refs, m["digest"])
        raise ConfigError(f"revision {revision!r} of model {name!r} is already published at {store.uri} with "
                          "different files; publish under a new --revision (replicas verify against the old one)")
    list(run_concurrently(sorted(m["files"]), lambda rel: upload_verified(store, src / rel, rel,
                                                                          m["files"][rel]["sha256"])))
    if not store.put_if_absent(MANIFEST, _manifest_bytes(m)):
        raise ConfigError(f"another publisher wrote {store.uri}/{MANIFEST} concurrently; check it and retry")
    refs = references(src, store.uri, task=task, digest=m["digest"],
                      endpoint_url=endpoint_url) if references else ()
    return Published(store.uri, len(m["files"]), total, "published", refs, m["digest"])


def publish_artifact(artifact_dir: str | Path, repository_uri: str, *, endpoint_url: str | None = None) -> Published:
    """Upload a compiled artifact to ``{repo}/artifacts/{name}/{revision}/{cache_key}/`` under a lease
    (:func:`~eks_inference.artifacts.resolve.publish_once`): if another writer publishes that key first, this one
    uploads nothing and deletes nothing."""
    src = Path(artifact_dir).expanduser().resolve()
    m = parse_manifest((src / MANIFEST).read_bytes() if (src / MANIFEST).is_file() else None, str(src),
                       kind="artifact")
    verify_local(src, m["files"], origin=lambda rel: str(src / rel))
    model = m["model"]
    store = open_store(join(repository_uri, "artifacts"), endpoint_url=endpoint_url)
    prefix = artifact_prefix(model["name"], model["revision"], m["cache_key"])
    total = sum(int(f["size"]) for f in m["files"].values())
    existing = store.read_bytes(f"{prefix}/{MANIFEST}")
    if existing is not None:  # any compilation under the same cache key is equivalent: keep the first
        parse_manifest(existing, store.uri_of(prefix), kind="artifact")
        return Published(store.uri_of(prefix), 0, 0, "already-published")
    writer = f"w-{uuid.uuid4().hex[:12]}"
    if publish_once(store, prefix, src, m["files"], (src / MANIFEST).read_bytes(), writer=writer):
        return Published(store.uri_of(prefix), len(m["files"]), total, "published")
    parse_manifest(store.read_bytes(f"{prefix}/{MANIFEST}"), store.uri_of(prefix), kind="artifact")
    return Published(store.uri_of(prefix), 0, 0, "already-published")

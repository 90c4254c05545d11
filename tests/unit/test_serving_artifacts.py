"""Manifests, cache keys, verified fetch and the create-only artifact cache (local directory stores).

The same paths against a real S3 API (moto server) are in tests/integration/serving/test_s3_artifacts.py.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from eks_inference.artifacts.resolve import (
    MANIFEST,
    ArtifactIntegrityError,
    ArtifactNotFound,
    ArtifactRequest,
    cache_key,
    fetch_verified,
    files_digest,
    hash_tree,
    parse_manifest,
    resolve_artifact,
    resolve_model,
    safe_relpath,
    sdk_versions,
    sha256_bytes,
    verify_local,
)
from eks_inference.compile.trace import compile_artifact
from eks_inference.config import ConfigError, Task
from eks_inference.storage import LocalStore, open_store

KEY_ARGS: dict[str, Any] = dict(model="m", revision="v1", weights_digest="w" * 64, task="embedding",
                                processor="cpu", dtype="fp32", batch_buckets=(1, 2, 4), seq_buckets=(16, 32),
                                versions={"torch": "2.13.0", "transformers": "5.24.0"})


def test_cache_key_is_stable_and_readable() -> None:
    k = cache_key(**KEY_ARGS)
    assert k == cache_key(**{**KEY_ARGS, "versions": dict(reversed(list(KEY_ARGS["versions"].items())))})
    assert k.startswith("cpu-fp32-b4-s32-")
    assert len(k.rsplit("-", 1)[1]) == 20


@pytest.mark.parametrize(("field", "value"), [
    ("model", "other"), ("revision", "v2"), ("weights_digest", "x" * 64), ("task", "classification"),
    ("processor", "graviton"), ("dtype", "bf16"), ("batch_buckets", (1, 2, 4, 8)), ("seq_buckets", (16, 64)),
    ("versions", {"torch": "2.14.0", "transformers": "5.24.0"}),
])
def test_every_input_of_the_cache_key_changes_it(field: str, value: Any) -> None:
    assert cache_key(**{**KEY_ARGS, field: value}) != cache_key(**KEY_ARGS)


def test_neuron_versions_enter_the_key_without_importing_the_sdk() -> None:
    v = sdk_versions("neuron")
    assert {"torch", "transformers", "torch_neuronx", "neuronx_cc"} <= set(v)
    assert v["torch_neuronx"] == "absent"  # not installable here; the key still says so
    assert "torch_neuronx" not in sdk_versions("cpu")


def test_hash_tree_lists_every_file_with_sha256_and_size(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "sub" / "b.txt").write_bytes(b"hello")
    (tmp_path / MANIFEST).write_text("{}")
    (tmp_path / ".tmp").write_text("x")
    files = hash_tree(tmp_path)
    assert files == {"a.bin": {"sha256": sha256_bytes(b"abc"), "size": 3},
                     "sub/b.txt": {"sha256": sha256_bytes(b"hello"), "size": 5}}
    assert files_digest(files) != files_digest({"a.bin": files["a.bin"]})


def test_verify_local_names_the_file_and_the_expected_hash(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"good")
    files = hash_tree(tmp_path)
    verify_local(tmp_path, files, origin=lambda rel: f"store://{rel}")
    (tmp_path / "w.bin").write_bytes(b"evil")
    with pytest.raises(ArtifactIntegrityError) as e:
        verify_local(tmp_path, files, origin=lambda rel: f"store://{rel}")
    assert "store://w.bin" in str(e.value)
    assert files["w.bin"]["sha256"] in str(e.value)
    (tmp_path / "w.bin").unlink()
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        verify_local(tmp_path, files, origin=str)


@pytest.mark.parametrize("rel", ["../x", "/etc/passwd", "a/../../x", "", "manifest.json", "a\\b"])
def test_manifest_paths_cannot_escape_the_destination(rel: str) -> None:
    with pytest.raises(ArtifactIntegrityError, match="unsafe file path"):
        safe_relpath(rel)


def test_parse_manifest_rejects_malformed_documents() -> None:
    good = {"format": 1, "kind": "model", "files": {"a": {"sha256": "0" * 64, "size": 1}}}
    assert parse_manifest(json.dumps(good).encode(), "here", kind="model")["files"]
    with pytest.raises(ArtifactNotFound):
        parse_manifest(None, "here", kind="model")
    with pytest.raises(ArtifactIntegrityError, match="not valid JSON"):
        parse_manifest(b"{", "here", kind="model")
    with pytest.raises(ArtifactIntegrityError, match="not a format-1 artifact manifest"):
        parse_manifest(json.dumps(good).encode(), "here", kind="artifact")
    with pytest.raises(ArtifactIntegrityError, match="no sha256/size"):
        parse_manifest(json.dumps({**good, "files": {"a": {"sha256": "short", "size": 1}}}).encode(), "h",
                       kind="model")


def test_local_store_put_if_absent_is_create_only(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert store.put_if_absent("k/manifest.json", b"first")
    assert not store.put_if_absent("k/manifest.json", b"second")
    assert store.read_bytes("k/manifest.json") == b"first"
    assert store.read_bytes("k/none") is None
    assert store.list("k") == ["k/manifest.json"]
    with pytest.raises(ValueError, match="escapes the store"):
        store.read_bytes("../outside")


def test_open_store_rejects_unknown_schemes() -> None:
    with pytest.raises(ConfigError, match=r"'gs://b' is not supported"):
        open_store("gs://b")
    with pytest.raises(ConfigError, match="has no bucket"):
        open_store("s3:///prefix")


def test_fetch_verified_refuses_a_corrupt_object_and_leaves_nothing_behind(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "w").mkdir(parents=True)
    (src / "w" / "graph.pt").write_bytes(b"weights")
    files = hash_tree(src)
    store = LocalStore(src)
    fetch_verified(store, "", files, tmp_path / "ok")
    assert (tmp_path / "ok" / "w" / "graph.pt").read_bytes() == b"weights"
    (src / "w" / "graph.pt").write_bytes(b"tampered")
    with pytest.raises(ArtifactIntegrityError) as e:
        fetch_verified(store, "", files, tmp_path / "bad")
    assert str(src / "w" / "graph.pt") in str(e.value)
    assert files["w/graph.pt"]["sha256"] in str(e.value)
    assert not list((tmp_path / "bad").rglob("*.pt")) if (tmp_path / "bad").exists() else True


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from eks_inference.compile.synthetic import write_synthetic_model

    return write_synthetic_model(tmp_path_factory.mktemp("tiny"), task=Task.EMBEDDING,
                                 words=["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog"])


def request() -> ArtifactRequest:
    return ArtifactRequest(model="tiny", revision="v1", task="embedding", processor="cpu", backend="cpu",
                           dtype="fp32", batch_buckets=(1, 2, 4), seq_buckets=(16, 32), versions=sdk_versions("cpu"))


def counting_compile() -> tuple[Any, list[int]]:
    from eks_inference.compile.trace import compile_artifact

    calls: list[int] = []

    def fn(**kw: Any) -> dict[str, Any]:
        calls.append(1)
        return compile_artifact(**kw)

    return fn, calls


def test_miss_compiles_and_publishes_then_every_replica_hits_the_cache(tiny_model: Path, tmp_path: Path) -> None:
    model = resolve_model(str(tiny_model), cache_dir=tmp_path / "c0")
    repo = tmp_path / "repo"
    fn, calls = counting_compile()
    first = resolve_artifact(request(), model, cache_dir=tmp_path / "c1", artifact_uri=str(repo), compile_fn=fn)
    assert first.source == "compiled" and len(calls) == 1
    published = json.loads((repo / "tiny" / "v1" / first.key / MANIFEST).read_text())
    assert published["cache_key"] == first.key
    assert set(published["files"]) == set(hash_tree(repo / "tiny" / "v1" / first.key))

    second = resolve_artifact(request(), model, cache_dir=tmp_path / "c2", artifact_uri=str(repo), compile_fn=fn)
    assert second.source == "remote-cache" and len(calls) == 1
    assert second.manifest == published
    third = resolve_artifact(request(), model, cache_dir=tmp_path / "c2", artifact_uri=str(repo), compile_fn=fn)
    assert third.source == "local-cache" and len(calls) == 1

    other = resolve_artifact(replace(request(), dtype="bf16"), model, cache_dir=tmp_path / "c2",
                             artifact_uri=str(repo), compile_fn=fn)
    assert other.source == "compiled" and other.key != first.key and len(calls) == 2


def test_concurrent_replicas_publish_exactly_one_artifact(tiny_model: Path, tmp_path: Path) -> None:
    model = resolve_model(str(tiny_model), cache_dir=tmp_path / "c")
    repo = tmp_path / "repo"
    gate = threading.Barrier(3)
    from eks_inference.compile.trace import compile_artifact

    def slow_compile(**kw: Any) -> dict[str, Any]:
        m = compile_artifact(**kw)
        gate.wait(timeout=120)  # all three finish compiling before any publishes: a real race
        return m

    results: list[Any] = []
    errors: list[BaseException] = []

    def replica(i: int) -> None:
        try:
            results.append(resolve_artifact(request(), model, cache_dir=tmp_path / f"r{i}", artifact_uri=str(repo),
                                            compile_fn=slow_compile))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors
    sources = sorted(r.source for r in results)
    assert sources == ["compiled", "compiled-lost-race", "compiled-lost-race"]
    key_dir = repo / "tiny" / "v1" / results[0].key
    manifest = json.loads((key_dir / MANIFEST).read_text())
    on_disk = set(hash_tree(key_dir))
    assert on_disk == set(manifest["files"]), "losers upload nothing; the winner's files are all there is"
    verify_local(key_dir, manifest["files"], origin=str)


def test_a_corrupted_remote_artifact_refuses_to_load(tiny_model: Path, tmp_path: Path) -> None:
    model = resolve_model(str(tiny_model), cache_dir=tmp_path / "c")
    repo = tmp_path / "repo"
    art = resolve_artifact(request(), model, cache_dir=tmp_path / "c1", artifact_uri=str(repo),
                           compile_fn=compile_artifact)
    graph = next(iter(art.manifest["files"]))
    target = repo / "tiny" / "v1" / art.key / graph
    target.write_bytes(target.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ArtifactIntegrityError) as e:
        resolve_artifact(request(), model, cache_dir=tmp_path / "c2", artifact_uri=str(repo),
                         compile_fn=compile_artifact)
    assert str(target) in str(e.value)
    assert art.manifest["files"][graph]["sha256"] in str(e.value)


def test_local_model_manifest_is_verified(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    from eks_inference.compile.publish import publish_model

    repo = tmp_path / "repo"
    pub = publish_model(tiny_model, str(repo), name="tiny", revision="v1", task="embedding")
    assert pub.status == "published" and pub.files == len(hash_tree(tiny_model))
    assert publish_model(tiny_model, str(repo), name="tiny", revision="v1").status == "already-published"
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    (copy / "extra.txt").write_text("changed")
    with pytest.raises(ConfigError, match=r"already published .* with different files; publish under a new"):
        publish_model(copy, str(repo), name="tiny", revision="v1")

    published = repo / "models" / "tiny" / "v1"
    resolved = resolve_model(str(published), cache_dir=tmp_path / "c")
    assert resolved.digest == files_digest(hash_tree(tiny_model))
    (published / "config.json").write_text("{}")
    with pytest.raises(ArtifactIntegrityError, match=r"config\.json: sha256 .* does not match"):
        resolve_model(str(published), cache_dir=tmp_path / "c")


def test_model_sources() -> None:
    bundled = resolve_model("bundled:all-minilm-l6-v2", cache_dir="/nonexistent")
    assert (bundled.path / "model.safetensors").is_file()
    with pytest.raises(ConfigError, match="bundled model 'nope' is unknown"):
        resolve_model("bundled:nope", cache_dir="/x")
    with pytest.raises(ConfigError, match="is not a directory"):
        resolve_model("/does/not/exist", cache_dir="/x")


def test_local_store_upload_new_never_replaces_an_object(tmp_path: Path) -> None:
    """GIVEN an object written by a first upload
    WHEN a second upload of other bytes targets the same key
    THEN it is refused (False) and the first bytes stay, as S3's If-None-Match keeps them in a bucket."""
    store = LocalStore(tmp_path / "repo")
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    assert store.upload_new(first, "k/file")
    assert not store.upload_new(second, "k/file")
    assert (tmp_path / "repo" / "k" / "file").read_bytes() == b"first"


def test_upload_verified_accepts_its_own_earlier_write_and_refuses_other_bytes(tmp_path: Path) -> None:
    """GIVEN an object already in the store
    WHEN the same bytes are uploaded again (a retried write) or other bytes are (a planted object)
    THEN the first is accepted, the second refused naming the object and both hashes."""
    from eks_inference.artifacts.manifests import sha256_file
    from eks_inference.artifacts.resolve import upload_verified

    store = LocalStore(tmp_path / "repo")
    src, planted = tmp_path / "src", tmp_path / "planted"
    src.write_bytes(b"weights")
    planted.write_bytes(b"something else")
    store.upload_new(planted, "other")
    upload_verified(store, src, "k", sha256_file(src))
    upload_verified(store, src, "k", sha256_file(src))
    with pytest.raises(ArtifactIntegrityError, match=r"other already exists with sha256 .*never replaced"):
        upload_verified(store, src, "other", sha256_file(src))


def test_weights_of_another_digest_than_the_pinned_one_are_refused(tiny_model: Path, tmp_path: Path) -> None:
    """GIVEN weights whose digest is D
    WHEN they are resolved with weights_sha256 pinned to D, and to another digest
    THEN the first loads and the second is refused naming both digests (before any S3 download, see the moto test)."""
    digest = files_digest(hash_tree(tiny_model))
    assert resolve_model(str(tiny_model), cache_dir=tmp_path, expected_digest=digest).digest == digest
    with pytest.raises(ArtifactIntegrityError, match=rf"digest {digest}, but the serve config pins {'0' * 64}"):
        resolve_model(str(tiny_model), cache_dir=tmp_path, expected_digest="0" * 64)


def test_a_replica_that_may_not_compile_names_the_missing_artifact_and_who_writes_it(
        tiny_model: Path, tmp_path: Path) -> None:
    """GIVEN a repository without the artifact and a caller that passes no compile function (a cluster replica)
    WHEN it resolves the artifact
    THEN nothing is compiled or written: ArtifactNotFound names the absent manifest and the compile hint; and with no
    repository at all the configuration is refused."""
    model = resolve_model(str(tiny_model), cache_dir=tmp_path / "c")
    repo = tmp_path / "repo"
    hint = "the compile Job of tiny-cpu"
    with pytest.raises(ArtifactNotFound) as e:
        resolve_artifact(request(), model, cache_dir=tmp_path / "c1", artifact_uri=str(repo), compile_fn=None,
                         compile_hint=hint)
    key = request().key(model.digest)
    assert e.value.missing == str(repo / "tiny" / "v1" / key / MANIFEST) and e.value.command == hint
    assert hint in str(e.value) and not repo.exists() and not (tmp_path / "c1" / "artifacts").exists()
    with pytest.raises(ConfigError, match=r"artifact_uri: none.*may not compile"):
        resolve_artifact(request(), model, cache_dir=tmp_path / "c1", artifact_uri=None, compile_fn=None)


def test_an_artifact_whose_manifest_names_other_weights_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    """GIVEN a published artifact whose manifest was rewritten to claim other weights (a forged manifest at the
    right cache key)
    WHEN a replica resolves it for the weights it serves
    THEN it refuses to start, naming what the manifest claims and what is served."""
    model = resolve_model(str(tiny_model), cache_dir=tmp_path / "c")
    repo = tmp_path / "repo"
    art = resolve_artifact(request(), model, cache_dir=tmp_path / "c1", artifact_uri=str(repo),
                           compile_fn=compile_artifact)
    path = repo / "tiny" / "v1" / art.key / MANIFEST
    forged = {**json.loads(path.read_text()), "model": {**art.manifest["model"], "weights_digest": "f" * 64}}
    path.write_text(json.dumps(forged))
    with pytest.raises(ArtifactIntegrityError, match=rf"compiled from weights '{'f' * 64}', not the served "
                                                     rf"{model.digest}"):
        resolve_artifact(request(), model, cache_dir=tmp_path / "c2", artifact_uri=str(repo), compile_fn=None)

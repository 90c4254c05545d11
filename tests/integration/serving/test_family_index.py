"""A family's index on a real S3 API (moto server on 127.0.0.1): ``publish --family`` adds a member and a new
index generation, create-only; racing publishers both land; a reader only ever sees whole indexes."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from eks_inference.artifacts.family_index import (
    INDEX_DIR,
    FamilyIndexError,
    index_key,
    parse_index,
    read_index,
)
from eks_inference.compile.family import derive_member, family_uri, member_uri, publish_member
from eks_inference.compile.synthetic import write_synthetic_model
from eks_inference.config import ConfigError, Task
from eks_inference.storage import open_store

pytestmark = pytest.mark.integration

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "models", "serve", "fast"]


@pytest.fixture(scope="module")
def repo(moto_s3_endpoint: str) -> str:
    import boto3

    boto3.client("s3", endpoint_url=moto_s3_endpoint).create_bucket(Bucket="eks-inference-family-index")
    return "s3://eks-inference-family-index/repo"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_model(tmp_path_factory.mktemp("family-base"), task=Task.EMBEDDING, words=WORDS)


def test_derived_members_are_deterministic_and_distinct(base: Path, tmp_path: Path) -> None:
    from eks_inference.artifacts.manifests import sha256_file

    a1 = derive_member(base, tmp_path / "a1", seed=1)
    a2 = derive_member(base, tmp_path / "a2", seed=1)
    b = derive_member(base, tmp_path / "b", seed=2)
    assert sha256_file(a1 / "model.safetensors") == sha256_file(a2 / "model.safetensors")
    assert sha256_file(a1 / "model.safetensors") != sha256_file(b / "model.safetensors")
    assert (a1 / "tokenizer.json").read_bytes() == (base / "tokenizer.json").read_bytes()


def test_publish_writes_the_member_then_the_next_generation(repo: str, base: Path, tmp_path: Path,
                                                            moto_s3_endpoint: str) -> None:
    store = open_store(family_uri(repo, "alpha"), endpoint_url=moto_s3_endpoint)
    assert read_index(store, "alpha").generation == 0
    first = publish_member(derive_member(base, tmp_path / "m1", seed=1), repo, family="alpha", model_id="m1",
                           task="embedding", endpoint_url=moto_s3_endpoint)
    assert (first.status, first.generation) == ("published", 1)
    assert first.uri == member_uri(repo, "alpha", "m1", "v1")
    second = publish_member(derive_member(base, tmp_path / "m2", seed=2), repo, family="alpha", model_id="m2",
                            task="embedding", endpoint_url=moto_s3_endpoint)
    index = read_index(store, "alpha")
    assert index.generation == second.generation == 2
    assert {m: e.digest for m, e in index.members.items()} == {"m1": first.digest, "m2": second.digest}
    assert index.task == "embedding"
    # every generation stays, whole: generation 1 still names only m1
    gen1 = parse_index(store.read_bytes(index_key(1)) or b"", "gen1")
    assert set(gen1.members) == {"m1"}
    # the member's files are there before the index names them
    assert store.read_bytes("members/m2/v1/manifest.json") is not None

    again = publish_member(tmp_path / "m1", repo, family="alpha", model_id="m1", task="embedding",
                           endpoint_url=moto_s3_endpoint)
    assert (again.status, again.generation) == ("already-published", 2)  # nothing new: no new generation
    with pytest.raises(ConfigError, match=r"already published .* with different files"):
        publish_member(tmp_path / "m2", repo, family="alpha", model_id="m1", task="embedding",
                       endpoint_url=moto_s3_endpoint)
    with pytest.raises(ConfigError, match="serves task 'embedding'"):
        publish_member(derive_member(base, tmp_path / "m3", seed=3), repo, family="alpha", model_id="m3",
                       task="classification", endpoint_url=moto_s3_endpoint)
    with pytest.raises(ConfigError, match=r"--model-id: 'Bad Id' is not a model id"):
        publish_member(tmp_path / "m1", repo, family="alpha", model_id="Bad Id", endpoint_url=moto_s3_endpoint)


def test_generations_are_create_only(repo: str, base: Path, tmp_path: Path, moto_s3_endpoint: str) -> None:
    publish_member(derive_member(base, tmp_path / "x", seed=9), repo, family="beta", model_id="x",
                   endpoint_url=moto_s3_endpoint)
    store = open_store(family_uri(repo, "beta"), endpoint_url=moto_s3_endpoint)
    assert store.put_if_absent(index_key(1), b"{}") is False  # an existing generation is never replaced


def test_racing_publishers_both_land(repo: str, base: Path, tmp_path: Path, moto_s3_endpoint: str) -> None:
    dirs = [derive_member(base, tmp_path / f"r{i}", seed=100 + i) for i in range(4)]
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            publish_member(dirs[i], repo, family="gamma", model_id=f"r{i}", endpoint_url=moto_s3_endpoint)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    store = open_store(family_uri(repo, "gamma"), endpoint_url=moto_s3_endpoint)
    index = read_index(store, "gamma")
    assert set(index.members) == {"r0", "r1", "r2", "r3"}
    assert index.generation == 4
    # every generation a reader could have listed is a whole, valid index
    for key in store.list(INDEX_DIR):
        parse_index(store.read_bytes(key) or b"", key)


def test_a_malformed_index_is_refused_naming_it() -> None:
    with pytest.raises(FamilyIndexError, match="gen9 member 'a' has no revision"):
        parse_index(json.dumps({"format": 1, "kind": "family-index", "generation": 9,
                                "members": {"a": {"digest": "x"}}}).encode(), "gen9")


def test_the_replicas_disk_cache_is_reverified_on_every_load(repo: str, base: Path, tmp_path: Path,
                                                             moto_s3_endpoint: str) -> None:
    """What a family replica's load does with a member's weights (``serving.family``, ``_load``): kept on local disk
    by digest, so a reload after an eviction fetches nothing; a cached file altered on disk is refused by its hash and
    fetched again, and the member is still the index's digest."""
    from eks_inference.artifacts.resolve import resolve_model

    pub = publish_member(derive_member(base, tmp_path / "d1", seed=11), repo, family="delta", model_id="d1",
                         task="embedding", endpoint_url=moto_s3_endpoint)
    entry = read_index(open_store(family_uri(repo, "delta"), endpoint_url=moto_s3_endpoint), "delta").members["d1"]
    uri = family_uri(repo, "delta").rstrip("/") + "/" + entry.prefix
    cache = tmp_path / "replica-cache"
    first = resolve_model(uri, cache_dir=cache, endpoint_url=moto_s3_endpoint, expected_digest=entry.digest)
    assert first.digest == pub.digest == entry.digest
    weights = first.path / "model.safetensors"
    good = weights.read_bytes()
    inode = weights.stat().st_ino

    again = resolve_model(uri, cache_dir=cache, endpoint_url=moto_s3_endpoint, expected_digest=entry.digest)
    assert again.path == first.path and weights.stat().st_ino == inode  # verified in place, not fetched again

    weights.write_bytes(good[:-8] + b"\x00" * 8)  # the disk cache altered behind the replica's back
    third = resolve_model(uri, cache_dir=cache, endpoint_url=moto_s3_endpoint, expected_digest=entry.digest)
    assert third.digest == entry.digest
    assert weights.read_bytes() == good and weights.stat().st_ino != inode  # refused by its hash, fetched again


def test_the_compile_step_publishes_a_members_artifact_where_replicas_that_never_compile_find_it(
        repo: str, base: Path, tmp_path: Path, moto_s3_endpoint: str) -> None:
    """``compile --serve-app APP --model-id ID`` (run when a member is published) compiles the member exactly as the
    family's replicas request it; a replica that may not compile (Inferentia's, compile_on_miss false) then resolves it
    from the artifact repository instead of answering 503. The CPU trace stands in for neuronx-cc here: the request,
    cache key and publish path are the same for every processor."""
    from eks_inference.artifacts.resolve import resolve_artifact, resolve_model
    from eks_inference.cli.serving import compile_serve_app
    from eks_inference.config import FamilySpec, ModelSpec, Processor, ServingSpec
    from eks_inference.serving.artifact import replica_artifact
    from eks_inference.serving.family import member_app_args, parse_family_args
    from eks_inference.serving.serve_config import parse_user_config, render_serve_config

    pub = publish_member(derive_member(base, tmp_path / "e1", seed=21), repo, family="epsilon", model_id="e1",
                         task="embedding", endpoint_url=moto_s3_endpoint)
    spec = ModelSpec(name="epsilon", task=Task.EMBEDDING, processors=(Processor.CPU,),
                     family=FamilySpec(memory_budget="64MiB"),
                     serving=ServingSpec(max_batch_size=4, max_inputs=4, max_seq_length=32))
    cfg = render_serve_config(spec, Processor.CPU, model_uri=family_uri(repo, "epsilon"),
                              artifact_uri=f"{repo}/artifacts", cache_dir=str(tmp_path / "replica-cache"),
                              s3_endpoint_url=moto_s3_endpoint, compile_on_miss=False)
    app = cfg["applications"][0]
    text = json.dumps({"args": app["args"], "user_config": app["deployments"][0]["user_config"]})

    with pytest.raises(ConfigError, match="is a model family: name the member"):
        compile_serve_app(text, tmp_path / "c0")
    with pytest.raises(ConfigError, match="'nobody' is not a member of family 'epsilon'"):
        compile_serve_app(text, tmp_path / "c0", model_id="nobody")

    done = compile_serve_app(text, tmp_path / "compile", model_id="e1")
    assert done["model"] == "epsilon/e1" and done["weights_digest"] == pub.digest and done["source"] == "compiled"

    # what a replica that never compiles does on the member's first request (serving.family, _load)
    a, _ = parse_family_args(app["args"])
    assert not a.compile_on_miss
    index = read_index(open_store(a.model_uri, endpoint_url=moto_s3_endpoint), "epsilon")
    member = member_app_args(a, index.members["e1"])
    ucfg = parse_user_config(app["deployments"][0]["user_config"], batch_buckets=a.batch_buckets)
    model = resolve_model(member.model_uri, cache_dir=tmp_path / "replica-cache", endpoint_url=moto_s3_endpoint,
                          expected_digest=member.weights_sha256)
    found = resolve_artifact(replica_artifact(member, ucfg).request, model, cache_dir=tmp_path / "replica-cache",
                             artifact_uri=a.artifact_uri, endpoint_url=moto_s3_endpoint, compile_fn=None)
    assert found.source == "remote-cache" and found.key == done["cache_key"]
    assert found.manifest["model"]["weights_digest"] == pub.digest

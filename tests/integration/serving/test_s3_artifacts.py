"""Model repository on a real S3 API (moto server on 127.0.0.1), served by real Ray Serve replicas:
publish → fetch → verify → serve; a cache hit skips compilation; a corrupt object stops the replica."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from eks_inference.artifacts.resolve import (
    MANIFEST,
    ArtifactRequest,
    artifact_prefix,
    resolve_artifact,
    resolve_model,
    sdk_versions,
)
from eks_inference.compile.publish import publish_model
from eks_inference.compile.synthetic import write_synthetic_model
from eks_inference.compile.trace import compile_artifact
from eks_inference.config import ModelSpec, Processor, ServingSpec, Task
from eks_inference.runtime.bucketing import seq_buckets_for
from eks_inference.serving.local import DeployFailed, LocalRay
from eks_inference.serving.serve_config import model_repository_uris

from .conftest import deploy_model, get, post

BUCKETS = ServingSpec(max_batch_size=4, max_seq_length=32).live_batch_buckets(Processor.CPU)
"""The batch buckets a CPU replica at max_batch_size 4 starts with (up to the live ceiling, so max_batch_size can move
through user_config alone): the artifact the test computes must ask for the same ones to share the replica's key."""

pytestmark = pytest.mark.integration

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "models", "serve", "fast"]
TEXTS = ["the quick brown fox", "models serve fast", "a lazy dog jumps over the fox"]


@pytest.fixture(scope="module")
def bucket(moto_s3_endpoint: str) -> str:
    import boto3

    boto3.client("s3", endpoint_url=moto_s3_endpoint).create_bucket(Bucket="eks-inference-models")
    return "s3://eks-inference-models/repo"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_model(tmp_path_factory.mktemp("tiny-s3"), task=Task.EMBEDDING, words=WORDS)


def s3_object(endpoint: str, uri: str) -> dict:
    import boto3

    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return boto3.client("s3", endpoint_url=endpoint).head_object(Bucket=bucket, Key=key)


def wait_for_info(url: str, predicate: object, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    info: dict = {}
    while time.monotonic() < deadline:
        status, info = get(f"{url}/info")
        if status == 200 and predicate(info):  # type: ignore[operator]
            return info
        time.sleep(0.5)
    raise AssertionError(f"info never matched: {info}")


def test_publish_fetch_verify_serve_then_a_cache_hit_skips_compilation(
        local_ray: LocalRay, moto_s3_endpoint: str, bucket: str, tiny: Path, tmp_path: Path) -> None:
    pub = publish_model(tiny, bucket, name="tiny-s3", revision="v1", task="embedding", endpoint_url=moto_s3_endpoint)
    assert pub.status == "published"
    model_uri, artifact_uri = model_repository_uris(bucket, ModelSpec(name="tiny-s3", revision="v1"))
    assert pub.uri == model_uri
    kw = dict(name="tiny-s3", model_uri=model_uri, artifact_uri=artifact_uri, s3_endpoint_url=moto_s3_endpoint,
              max_batch_size=4, max_seq_length=32)

    deploy_model(local_ray, tmp_path, cache_dir=tmp_path / "replica-a", **kw)  # type: ignore[arg-type]
    url = f"{local_ray.url}/tiny-s3"
    first = wait_for_info(url, lambda i: "artifact" in i)
    assert first["artifact"]["source"] == "compiled"
    key = first["artifact"]["key"]
    manifest_uri = f"{artifact_uri}/{artifact_prefix('tiny-s3', 'v1', key)}/{MANIFEST}"
    assert first["artifact"]["uri"] == manifest_uri.rsplit("/", 1)[0]
    etag = s3_object(moto_s3_endpoint, manifest_uri)["ETag"]

    # served answers equal the published weights run directly
    status, body = post(f"{url}/predict", {"inputs": TEXTS})
    assert status == 200 and isinstance(body, dict)
    local = resolve_model(str(tiny), cache_dir=tmp_path / "direct")
    assert first["weights_digest"] == local.digest
    from eks_inference.runtime.backends import load_backend
    from eks_inference.runtime.engine import Engine

    req = ArtifactRequest(model="tiny-s3", revision="v1", task="embedding", processor="cpu", backend="cpu",
                          dtype="fp32", batch_buckets=BUCKETS, seq_buckets=seq_buckets_for("cpu", 32),
                          versions=sdk_versions("cpu"))
    art = resolve_artifact(req, local, cache_dir=tmp_path / "direct", artifact_uri=None, compile_fn=compile_artifact)
    assert art.key == key  # the replica and this process agree on the cache key
    eng = Engine(model_dir=tiny, task=Task.EMBEDDING, backend=load_backend(art.path, art.manifest),
                 batch_buckets=BUCKETS, seq_buckets=req.seq_buckets, max_seq_length=32)
    np.testing.assert_allclose(np.array(body["outputs"]), np.array(eng.run(TEXTS)[0]), atol=1e-5)

    # a new replica with an empty local cache: fetches and verifies, does not compile
    deploy_model(local_ray, tmp_path, cache_dir=tmp_path / "replica-b", **kw)  # type: ignore[arg-type]
    second = wait_for_info(url, lambda i: i.get("artifact", {}).get("source") != "compiled")
    assert second["artifact"]["source"] == "remote-cache"
    assert second["artifact"]["key"] == key
    assert second["artifact"]["compile_seconds"] == first["artifact"]["compile_seconds"]
    assert s3_object(moto_s3_endpoint, manifest_uri)["ETag"] == etag  # nobody rewrote the manifest
    assert post(f"{url}/predict", {"inputs": TEXTS})[1] == body
    local_ray.remove("tiny-s3")


def test_a_corrupt_artifact_object_stops_the_replica_naming_object_and_hash(
        local_ray: LocalRay, moto_s3_endpoint: str, bucket: str, tiny: Path, tmp_path: Path) -> None:
    import boto3

    publish_model(tiny, bucket, name="tiny-bad", revision="v1", endpoint_url=moto_s3_endpoint)
    model_uri, artifact_uri = model_repository_uris(bucket, ModelSpec(name="tiny-bad", revision="v1"))
    model = resolve_model(model_uri, cache_dir=tmp_path / "c", endpoint_url=moto_s3_endpoint)
    req = ArtifactRequest(model="tiny-bad", revision="v1", task="embedding", processor="cpu", backend="cpu",
                          dtype="fp32", batch_buckets=BUCKETS, seq_buckets=seq_buckets_for("cpu", 32),
                          versions=sdk_versions("cpu"))
    art = resolve_artifact(req, model, cache_dir=tmp_path / "c", artifact_uri=artifact_uri,
                           endpoint_url=moto_s3_endpoint, compile_fn=compile_artifact)
    assert art.source == "compiled"
    graph = art.manifest["graphs"][0]["file"]
    expected = art.manifest["files"][graph]["sha256"]
    object_uri = f"{art.uri}/{graph}"
    b, key = object_uri.removeprefix("s3://").split("/", 1)
    boto3.client("s3", endpoint_url=moto_s3_endpoint).put_object(Bucket=b, Key=key, Body=b"not a torchscript graph")

    with pytest.raises(DeployFailed) as e:
        deploy_model(local_ray, tmp_path, name="tiny-bad", model_uri=model_uri, artifact_uri=artifact_uri,
                     s3_endpoint_url=moto_s3_endpoint, cache_dir=tmp_path / "replica", max_batch_size=4,
                     max_seq_length=32)
    message = str(e.value)
    assert "ArtifactIntegrityError" in message
    assert object_uri in message and expected in message
    assert "refusing to start" in message
    assert not list((tmp_path / "replica").rglob("graph.pt"))  # nothing unverified was kept
    local_ray.remove("tiny-bad")
    m = json.loads(boto3.client("s3", endpoint_url=moto_s3_endpoint).get_object(
        Bucket=b, Key=key.rsplit("/", 2)[0] + "/" + MANIFEST)["Body"].read())
    assert m["files"][graph]["sha256"] == expected  # the manifest was not "fixed" to match the corrupt object


def cluster_config(local_ray: LocalRay, tmp_path: Path, *, name: str, model_uri: str, artifact_uri: str,
                   endpoint: str, weights_sha256: str | None) -> dict:
    """The serve config as the cluster renders it (replicas may not compile; the weights digest pinned), on this
    machine's Ray and the moto S3."""
    from eks_inference.config import Processor, ServingSpec
    from eks_inference.serving.serve_config import render_serve_config

    model = ModelSpec(name=name, processors=(Processor.CPU,), weights_sha256=weights_sha256,
                      serving=ServingSpec(max_batch_size=4, max_seq_length=32))
    cfg = render_serve_config(model, Processor.CPU, model_uri=model_uri, artifact_uri=artifact_uri,
                              cache_dir=str(tmp_path / "replica"), http_host="127.0.0.1", http_port=local_ray.http_port,
                              s3_endpoint_url=endpoint, compile_on_miss=False,
                              compile_hint=f"the compile Job of {name}-cpu")
    cfg["applications"][0]["args"]["weights_poll_s"] = [0.2, 1.0]
    return cfg


def wait_for_health(url: str, predicate: object, timeout_s: float = 180) -> tuple[int, dict]:
    deadline = time.monotonic() + timeout_s
    last: tuple[int, object] = (0, None)
    while time.monotonic() < deadline:
        try:
            last = get(f"{url}/healthz")
        except OSError:
            last = (0, None)
        if isinstance(last[1], dict) and predicate(last):  # type: ignore[operator]
            return last  # type: ignore[return-value]
        time.sleep(0.3)
    raise AssertionError(f"/healthz never matched: {last}")


def s3_keys(endpoint: str, uri: str) -> list[str]:
    import boto3

    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    listed = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_a_replica_refuses_weights_whose_digest_differs_from_the_pinned_one(
        local_ray: LocalRay, moto_s3_endpoint: str, bucket: str, tiny: Path, tmp_path: Path) -> None:
    """GIVEN weights published to the repository, and a serve config pinning another digest (weights replaced
    under the same revision, or a config pointing at the wrong ones)
    WHEN the replica starts
    THEN it refuses to load them, naming the published and the pinned digest, and never becomes healthy."""
    pub = publish_model(tiny, bucket, name="tiny-pin", revision="v1", endpoint_url=moto_s3_endpoint)
    assert pub.digest is not None
    model_uri, artifact_uri = model_repository_uris(bucket, ModelSpec(name="tiny-pin", revision="v1"))
    pinned = "0" * 64
    local_ray.deploy(cluster_config(local_ray, tmp_path, name="tiny-pin", model_uri=model_uri,
                                    artifact_uri=artifact_uri, endpoint=moto_s3_endpoint, weights_sha256=pinned))
    with pytest.raises(DeployFailed) as e:
        local_ray.wait_ready("tiny-pin", timeout_s=300)
    message = str(e.value)
    assert "ArtifactIntegrityError" in message and "refusing to load them" in message
    assert pub.digest in message and pinned in message
    assert not list((tmp_path / "replica").rglob("*.safetensors"))  # refused before any download
    local_ray.remove("tiny-pin")


def test_cluster_replicas_wait_for_the_compile_step_and_serve_what_it_published(
        local_ray: LocalRay, moto_s3_endpoint: str, bucket: str, tiny: Path, tmp_path: Path) -> None:
    """GIVEN published weights, their digest pinned, and the cluster's serve config (replicas may not compile)
    WHEN a replica starts before the compile step has run
    THEN it writes nothing and answers 503 naming the absent artifact and the compile Job; once the compile step
    (what the compile Job runs, with the same serve-config application) publishes the artifact, the replica loads
    it from the repository and serves."""
    from eks_inference.cli.serving import compile_serve_app

    pub = publish_model(tiny, bucket, name="tiny-job", revision="v1", endpoint_url=moto_s3_endpoint)
    model_uri, artifact_uri = model_repository_uris(bucket, ModelSpec(name="tiny-job", revision="v1"))
    cfg = cluster_config(local_ray, tmp_path, name="tiny-job", model_uri=model_uri, artifact_uri=artifact_uri,
                         endpoint=moto_s3_endpoint, weights_sha256=pub.digest)
    local_ray.deploy(cfg)
    url = f"{local_ray.url}/tiny-job"
    status, body = wait_for_health(url, lambda r: r[1].get("status") == "waiting_for_artifact")
    assert status == 503 and body["error"]["code"] == "artifact_not_compiled"
    assert "the compile Job of tiny-job-cpu writes it, replicas never do" in body["error"]["message"]
    assert body["missing"].startswith(f"{artifact_uri}/tiny-job/v1/") and body["missing"].endswith(MANIFEST)
    assert s3_keys(moto_s3_endpoint, f"{artifact_uri}/tiny-job") == []  # the replica compiled and wrote nothing

    (app,) = [a for a in cfg["applications"] if a["name"] == "tiny-job"]
    result = compile_serve_app(json.dumps({"args": app["args"], "user_config": app["deployments"][0]["user_config"]}),
                               tmp_path / "compile-job")
    assert result["source"] == "compiled" and result["weights_digest"] == pub.digest
    assert body["missing"] == f"{result['uri']}/{MANIFEST}"  # the Job wrote exactly what the replica waits for

    wait_for_health(url, lambda r: r[0] == 200, timeout_s=300)
    info = wait_for_info(url, lambda i: "artifact" in i)
    assert info["artifact"]["source"] == "remote-cache" and info["artifact"]["key"] == result["cache_key"]
    assert info["weights_digest"] == pub.digest
    status, out = post(f"{url}/predict", {"inputs": TEXTS})
    assert status == 200 and len(out["outputs"]) == len(TEXTS)
    local_ray.remove("tiny-job")


def test_s3_uploads_are_create_only_in_one_put_and_in_parts(moto_s3_endpoint: str, bucket: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """GIVEN a file uploaded once, in one PUT and (over the part size) as a multipart upload
    WHEN other bytes are uploaded to the same keys
    THEN S3 refuses them (If-None-Match on the PUT and on the completion) and the first bytes stay; no multipart
    upload is left open."""
    import boto3

    from eks_inference import storage
    from eks_inference.storage import S3Store

    monkeypatch.setattr(storage, "SINGLE_PUT_MAX_BYTES", 5 * 2**20)  # S3's smallest part
    store = S3Store(f"{bucket}/create-only", endpoint_url=moto_s3_endpoint)
    small, large, other = tmp_path / "small", tmp_path / "large", tmp_path / "other"
    small.write_bytes(b"s" * 1000)
    large.write_bytes(b"L" * (11 * 2**20))
    other.write_bytes(b"x" * (6 * 2**20))
    for src, rel in ((small, "small"), (large, "large")):
        assert store.upload_new(src, rel)
        assert not store.upload_new(other, rel)
        assert store.read_bytes(rel) == src.read_bytes()
    client = boto3.client("s3", endpoint_url=moto_s3_endpoint)
    b = bucket.removeprefix("s3://").split("/")[0]
    assert not client.list_multipart_uploads(Bucket=b).get("Uploads")

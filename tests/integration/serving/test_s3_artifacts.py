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
from eks_inference.config import ModelSpec, Task
from eks_inference.runtime.bucketing import seq_buckets_for
from eks_inference.serving.local import DeployFailed, LocalRay
from eks_inference.serving.serve_config import model_repository_uris

from .conftest import deploy_model, get, post

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
                          dtype="fp32", batch_buckets=(1, 2, 4), seq_buckets=seq_buckets_for("cpu", 32),
                          versions=sdk_versions("cpu"))
    art = resolve_artifact(req, local, cache_dir=tmp_path / "direct", artifact_uri=None, compile_fn=compile_artifact)
    assert art.key == key  # the replica and this process agree on the cache key
    eng = Engine(model_dir=tiny, task=Task.EMBEDDING, backend=load_backend(art.path, art.manifest),
                 batch_buckets=(1, 2, 4), seq_buckets=req.seq_buckets, max_seq_length=32)
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
                          dtype="fp32", batch_buckets=(1, 2, 4), seq_buckets=seq_buckets_for("cpu", 32),
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

"""The model repository on S3's bad days, over a real S3 API: moto on 127.0.0.1 behind :mod:`tests.s3_proxy`, which
answers a missing object with 403 as S3 does for a caller without ``s3:ListBucket``, and fails writes with 503
SlowDown as S3 does under load.

- "Not published yet" is recognised whichever of 404 and 403 S3 answers: a replica waits for its weights, a replica
  that may not compile waits for its artifact, a writer compiles on the miss; a 403 on an object that is there stays
  an error.
- A failed upload is retried, and a compile whose upload still failed is published from the local cache on the next
  call, not compiled again.
- Writers racing on one cache key leave exactly one version of each object, all referenced by the one manifest, and
  send no DELETE; a writer that died holding the lease is taken over.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eks_inference import storage
from eks_inference.artifacts.resolve import (
    LEASE,
    MANIFEST,
    ArtifactNotFound,
    ArtifactRequest,
    artifact_prefix,
    resolve_artifact,
    resolve_model,
    sdk_versions,
)
from eks_inference.compile.publish import publish_artifact, publish_model
from eks_inference.compile.synthetic import write_synthetic_model
from eks_inference.compile.trace import compile_artifact
from eks_inference.config import Task
from eks_inference.serving.weights import Backoff, WeightsWatch, wait_for_weights
from tests.s3_proxy import S3Faults, s3_proxy

pytestmark = pytest.mark.integration

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog"]
BUCKET = "eks-inference-bad-day"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_model(tmp_path_factory.mktemp("tiny-bad-day"), task=Task.EMBEDDING, words=WORDS)


@pytest.fixture(scope="module")
def proxy(moto_s3_endpoint: str) -> Iterator[tuple[str, S3Faults]]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})  # as the repository is
    with s3_proxy(moto_s3_endpoint) as (url, faults):
        yield url, faults


@pytest.fixture
def faults(proxy: tuple[str, S3Faults]) -> Iterator[S3Faults]:
    f = proxy[1]
    f.requests.clear()
    yield f
    f.missing_is_403 = lambda key: False
    f.denied = lambda key: False
    f.fail_writes(0)


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retry schedule's shape, at a pace a test can wait for (the default spans about four minutes), and
    botocore's own backoff between the attempts of one call scaled down the same way: a throttling answer such as
    SlowDown waits up to 1, 2, 4, 8 s there (``botocore/retries/standard.py``, ``ExponentialBackoff``)."""
    from botocore.retries.standard import ExponentialBackoff

    monkeypatch.setattr(storage, "RETRY_DELAYS_S", (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2))
    monkeypatch.setattr(ExponentialBackoff, "_DEFAULT_BACKOFF_CONFIG",
                        {"throttling_base_scale": 0.02, "non_throttling_base_scale": 0.02})


def request(name: str) -> ArtifactRequest:
    return ArtifactRequest(model=name, revision="v1", task="embedding", processor="cpu", backend="cpu",
                           dtype="fp32", batch_buckets=(1, 2), seq_buckets=(16,), versions=sdk_versions("cpu"))


def versions(endpoint: str, prefix: str) -> tuple[dict[str, int], int]:
    """``({key: number of versions}, number of delete markers)`` under ``prefix`` of the versioned bucket."""
    import boto3

    out: dict[str, int] = {}
    markers = 0
    for page in boto3.client("s3", endpoint_url=endpoint).get_paginator("list_object_versions").paginate(
            Bucket=BUCKET, Prefix=prefix):
        for v in page.get("Versions", []):
            out[v["Key"]] = out.get(v["Key"], 0) + 1
        markers += len(page.get("DeleteMarkers", []))
    return out, markers


@pytest.mark.parametrize("answer", [404, 403])
def test_a_replica_started_before_publish_waits_whatever_s3_answers(
        answer: int, proxy: tuple[str, S3Faults], faults: S3Faults, tiny: Path, tmp_path: Path) -> None:
    """GIVEN weights not published yet, and S3 answering their missing manifest with ``answer``
    WHEN a replica looks for them, waits, and the weights are published meanwhile
    THEN the look is "not published" naming the manifest, the wait ends with the verified weights, and (on 403) a
    listing of exactly that key is what told absence from denial."""
    url, _ = proxy
    faults.missing_is_403 = lambda key: answer == 403
    uri = f"s3://{BUCKET}/repo-{answer}/models/tiny/v1"
    with pytest.raises(ArtifactNotFound) as e:
        resolve_model(uri, cache_dir=tmp_path / "c", endpoint_url=url)
    assert e.value.missing == f"{uri}/{MANIFEST}"
    assert any(status == answer and path.endswith(f"/{MANIFEST}") for _, path, status in faults.seen("GET"))
    if answer == 403:
        assert any("list-type=2" in path for _, path, _ in faults.seen("GET")), "absence was confirmed by a listing"

    stop = threading.Event()
    found: list[Any] = []
    watch = WeightsWatch(model="tiny", missing=e.value.missing or "", command=e.value.command, reason=str(e.value))
    waiter = threading.Thread(target=lambda: found.append(wait_for_weights(
        uri, cache_dir=tmp_path / "c", endpoint_url=url, watch=watch, stop=stop, backoff=Backoff(0.05, 0.5))))
    waiter.start()
    try:
        deadline = time.monotonic() + 60
        while watch.checks < 2 and time.monotonic() < deadline:  # it has looked and found nothing, twice
            time.sleep(0.05)
        assert watch.checks >= 2 and watch.last_error is None, watch.last_error
        pub = publish_model(tiny, f"s3://{BUCKET}/repo-{answer}", name="tiny", revision="v1", task="embedding",
                            endpoint_url=url)
        waiter.join(120)
    finally:
        stop.set()
        waiter.join(10)
    assert found and found[0] is not None and found[0].digest == pub.digest


@pytest.mark.parametrize("answer", [404, 403])
def test_an_unpublished_artifact_is_waited_for_or_compiled_whatever_s3_answers(
        answer: int, proxy: tuple[str, S3Faults], faults: S3Faults, tiny: Path, tmp_path: Path) -> None:
    """GIVEN published weights and no compiled artifact, S3 answering the missing artifact manifest with ``answer``
    WHEN a replica that may not compile looks for it, and then a writer (compile on miss) does
    THEN the replica gets "not published" naming the manifest (it waits on that), and the writer compiles and
    publishes instead of failing."""
    url, _ = proxy
    faults.missing_is_403 = lambda key: answer == 403
    repo = f"s3://{BUCKET}/art-{answer}"
    publish_model(tiny, repo, name="tiny", revision="v1", task="embedding", endpoint_url=url)
    model = resolve_model(f"{repo}/models/tiny/v1", cache_dir=tmp_path / "c", endpoint_url=url)
    req = request("tiny")
    with pytest.raises(ArtifactNotFound) as e:
        resolve_artifact(req, model, cache_dir=tmp_path / "replica", artifact_uri=f"{repo}/artifacts",
                         endpoint_url=url, compile_fn=None, compile_hint="the compile Job")
    key = req.key(model.digest)
    assert e.value.missing == f"{repo}/artifacts/{artifact_prefix('tiny', 'v1', key)}/{MANIFEST}"
    art = resolve_artifact(req, model, cache_dir=tmp_path / "writer", artifact_uri=f"{repo}/artifacts",
                           endpoint_url=url, compile_fn=compile_artifact)
    assert art.source == "compiled"
    again = resolve_artifact(req, model, cache_dir=tmp_path / "replica", artifact_uri=f"{repo}/artifacts",
                             endpoint_url=url, compile_fn=None)
    assert again.source == "remote-cache" and again.manifest == art.manifest


def test_a_403_on_an_object_that_is_there_stays_an_error(
        proxy: tuple[str, S3Faults], faults: S3Faults, tiny: Path, tmp_path: Path) -> None:
    """GIVEN published weights whose manifest this caller may not read (403 though the object is there)
    WHEN a replica looks for them
    THEN it is an access error, not "not published": the listing shows the object, so nothing is presumed absent."""
    from botocore.exceptions import ClientError

    url, _ = proxy
    publish_model(tiny, f"s3://{BUCKET}/denied", name="tiny", revision="v1", task="embedding", endpoint_url=url)
    faults.denied = lambda key: key.startswith("denied/")
    with pytest.raises(ClientError, match="AccessDenied"):
        resolve_model(f"s3://{BUCKET}/denied/models/tiny/v1", cache_dir=tmp_path / "c", endpoint_url=url)


def test_failed_uploads_are_retried_and_a_compile_is_never_lost(
        proxy: tuple[str, S3Faults], faults: S3Faults, quick_retries: None, tiny: Path, tmp_path: Path) -> None:
    """GIVEN S3 answering 503 SlowDown to more consecutive writes than botocore retries one call (5 attempts)
    WHEN the compile step publishes, and later S3 refuses every write for longer than every retry
    THEN the first publish succeeds after the failures; the second keeps its compile in the local cache and the
    next call publishes that one without compiling again."""
    url, _ = proxy
    repo = f"s3://{BUCKET}/retry"
    publish_model(tiny, repo, name="tiny", revision="v1", task="embedding", endpoint_url=url)
    model = resolve_model(f"{repo}/models/tiny/v1", cache_dir=tmp_path / "c", endpoint_url=url)
    faults.fail_writes(8)
    art = resolve_artifact(request("tiny"), model, cache_dir=tmp_path / "w1", artifact_uri=f"{repo}/artifacts",
                           endpoint_url=url, compile_fn=compile_artifact)
    assert art.source == "compiled"
    assert len([r for r in faults.requests if r[2] == 503]) == 8

    compiles: list[int] = []

    def counting(**kw: Any) -> dict[str, Any]:
        compiles.append(1)
        return compile_artifact(**kw)

    other = request("tiny-2")
    faults.fail_writes(10_000)
    with pytest.raises(Exception, match="SlowDown"):
        resolve_artifact(other, model, cache_dir=tmp_path / "w2", artifact_uri=f"{repo}/artifacts",
                         endpoint_url=url, compile_fn=counting)
    faults.fail_writes(0)
    again = resolve_artifact(other, model, cache_dir=tmp_path / "w2", artifact_uri=f"{repo}/artifacts",
                             endpoint_url=url, compile_fn=counting)
    assert again.source == "local-cache" and len(compiles) == 1
    replica = resolve_artifact(other, model, cache_dir=tmp_path / "r", artifact_uri=f"{repo}/artifacts",
                               endpoint_url=url, compile_fn=None)
    assert replica.source == "remote-cache" and replica.manifest == again.manifest


def test_racing_writers_leave_one_version_of_each_object_and_delete_nothing(
        proxy: tuple[str, S3Faults], faults: S3Faults, tiny: Path, tmp_path: Path) -> None:
    """GIVEN three writers that compile one cache key at once (each graph's bytes differ: tracing is not
    byte-reproducible) in a versioned bucket
    WHEN all three publish after all three compiled
    THEN one publishes, two write nothing; every object under the key has exactly one version, no delete marker,
    every data object is in the manifest, and no DELETE reached S3."""
    url, _ = proxy
    repo = f"s3://{BUCKET}/race"
    publish_model(tiny, repo, name="tiny", revision="v1", task="embedding", endpoint_url=url)
    model = resolve_model(f"{repo}/models/tiny/v1", cache_dir=tmp_path / "c", endpoint_url=url)
    gate = threading.Barrier(3)

    def gated(**kw: Any) -> dict[str, Any]:
        m = compile_artifact(**kw)
        gate.wait(timeout=300)
        return m

    results: list[Any] = []
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            results.append(resolve_artifact(request("tiny"), model, cache_dir=tmp_path / f"w{i}",
                                            artifact_uri=f"{repo}/artifacts", endpoint_url=url, compile_fn=gated))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    assert sorted(r.source for r in results) == ["compiled", "compiled-lost-race", "compiled-lost-race"]
    assert len({json.dumps(r.manifest["files"], sort_keys=True) for r in results}) == 3, "three different compiles"

    prefix = f"race/artifacts/{artifact_prefix('tiny', 'v1', results[0].key)}/"
    found, markers = versions(url, prefix)
    (winner,) = [r for r in results if r.source == "compiled"]
    expected = {prefix + rel for rel in winner.manifest["files"]} | {prefix + MANIFEST, f"{prefix}{LEASE}-0"}
    assert set(found) == expected
    assert set(found.values()) == {1} and markers == 0
    assert faults.seen("DELETE") == []


def test_a_writer_that_died_holding_the_lease_is_taken_over(
        proxy: tuple[str, S3Faults], faults: S3Faults, tiny: Path, tmp_path: Path) -> None:
    """GIVEN a compiled artifact, and a lease on its key left by a writer that died (its lease has ended)
    WHEN ``eks-inference publish --artifact`` publishes it
    THEN it takes the next lease and publishes; nothing is deleted."""
    import boto3

    url, _ = proxy
    repo = f"s3://{BUCKET}/takeover"
    publish_model(tiny, repo, name="tiny", revision="v1", task="embedding", endpoint_url=url)
    model = resolve_model(f"{repo}/models/tiny/v1", cache_dir=tmp_path / "c", endpoint_url=url)
    art = resolve_artifact(request("tiny"), model, cache_dir=tmp_path / "local", artifact_uri=None,
                           compile_fn=compile_artifact)
    key = f"takeover/artifacts/{artifact_prefix('tiny', 'v1', art.key)}"
    boto3.client("s3", endpoint_url=url).put_object(
        Bucket=BUCKET, Key=f"{key}/{LEASE}-0", IfNoneMatch="*",
        Body=json.dumps({"writer": "w-dead", "expires_at": time.time() - 1}).encode())
    pub = publish_artifact(art.path, repo, endpoint_url=url)
    assert pub.status == "published"
    found, markers = versions(url, key + "/")
    assert f"{key}/{LEASE}-1" in found and f"{key}/{MANIFEST}" in found and markers == 0
    assert publish_artifact(art.path, repo, endpoint_url=url).status == "already-published"
    assert faults.seen("DELETE") == []

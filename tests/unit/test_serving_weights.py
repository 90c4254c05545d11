"""Waiting for unpublished weights: the backoff, what a waiting replica reports, and the poll loop
(against a local directory standing in for the repository; the S3 path is in tests/system/)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from eks_inference.artifacts.resolve import (
    ArtifactIntegrityError,
    ArtifactNotFound,
    check_model_source,
    publish_command,
    read_model_manifest,
    resolve_model,
)
from eks_inference.compile.publish import publish_model
from eks_inference.config import ConfigError
from eks_inference.serving.weights import Backoff, WeightsWatch, wait_for_weights
from eks_inference.storage import LocalStore, S3Store


def test_backoff_grows_to_its_bound_with_jitter() -> None:
    delays = [d for d, _ in zip(Backoff().delays(random.Random(1)), range(40), strict=False)]
    assert 1.6 <= delays[0] <= 2.4
    assert all(d <= 30.0 for d in delays)
    assert max(delays[-10:]) <= 30.0 and min(delays[-10:]) >= 24.0  # at the bound, jittered by ±20 %
    assert len(set(delays[-10:])) > 1
    a, b = Backoff().delays(random.Random(1)), Backoff().delays(random.Random(2))
    assert next(a) != next(b)  # replicas of one deploy do not poll in lockstep


def test_publish_command_names_repository_name_and_revision() -> None:
    assert publish_command("s3://bkt/models/minilm/v1") == (
        "eks-inference publish MODEL_DIR --to s3://bkt --name minilm --revision v1")
    assert publish_command("s3://bkt/team/a/models/bert/2026-01/", endpoint_url="http://127.0.0.1:5000") == (
        "eks-inference publish MODEL_DIR --to s3://bkt/team/a --name bert --revision 2026-01 "
        "--s3-endpoint-url http://127.0.0.1:5000")
    assert publish_command("s3://bkt/somewhere/else") is None


def test_a_missing_manifest_names_the_object_and_the_command() -> None:
    from botocore.exceptions import ClientError

    class NoSuchKey:
        def get_object(self, **kw: Any) -> Any:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": kw["Key"]}}, "GetObject")

    with pytest.raises(ArtifactNotFound) as e:
        read_model_manifest(S3Store("s3://bkt/repo/models/minilm/v1", client=NoSuchKey()))
    assert e.value.missing == "s3://bkt/repo/models/minilm/v1/manifest.json"
    assert e.value.command == "eks-inference publish MODEL_DIR --to s3://bkt/repo --name minilm --revision v1"
    assert str(e.value).startswith("the model's weights are not published: s3://bkt/repo/models/minilm/v1/"
                                   "manifest.json does not exist; publish them with `eks-inference publish")


@pytest.mark.parametrize(("source", "says"), [
    ("bundled:bert-base", "'bundled:bert-base' is not a bundled model; use bundled:all-minilm-l6-v2"),
    ("s3://Bad_Bucket/models/m/v1", "has no valid S3 bucket name"),
    ("s3://bkt", "names a bucket but no model prefix; write s3://bkt/models/NAME/REVISION"),
    ("s3:///models/m/v1", "has no valid S3 bucket name"),
    ("gs://bkt/models/m/v1", "has an unsupported scheme"),
    ("/no/such/dir", "'/no/such/dir' is not a directory"),
])
def test_sources_are_checked_before_anything_starts(source: str, says: str) -> None:
    with pytest.raises(ConfigError, match="^--source: .*" + says.replace("(", r"\(").replace(")", r"\)")):
        check_model_source(source)


def test_good_sources_pass(tmp_path: Path) -> None:
    for source in ("bundled:all-minilm-l6-v2", "s3://my-bucket/models/m/v1", str(tmp_path), f"file://{tmp_path}"):
        check_model_source(source)


def test_the_watch_body_is_the_api_error_with_details() -> None:
    w = WeightsWatch(model="m", missing="s3://b/models/m/v1/manifest.json",
                     command="eks-inference publish MODEL_DIR --to s3://b --name m --revision v1", reason="r",
                     since=100.0, checks=3, next_check_at=112.0)
    body = w.body(now=110.0)
    assert body["status"] == "waiting_for_weights" and body["error"]["code"] == "weights_not_published"
    assert w.missing in body["error"]["message"] and w.command in body["error"]["message"]  # type: ignore[operator]
    assert (body["missing"], body["waiting_s"], body["checks"], body["next_check_in_s"]) == (w.missing, 10.0, 3, 2.0)


def watch() -> WeightsWatch:
    return WeightsWatch(model="m", missing="x/manifest.json", command=None, reason="r")


FAST = Backoff(initial_s=0.01, max_s=0.02)


def test_the_poll_loads_weights_once_they_are_published(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / "vocab.txt").write_text("a\nb\n")
    repo = tmp_path / "repo"
    calls: list[int] = []

    def resolve(uri: str, **kw: Any) -> Any:  # the real resolve over a local repository
        calls.append(1)
        if len(calls) == 3:
            publish_model(src, str(repo), name="m", revision="v1")
        store = LocalStore(repo / "models" / "m" / "v1")
        m = read_model_manifest(store)
        return resolve_model(str(store.root), **kw) if m else None

    w = watch()
    model = wait_for_weights("unused", cache_dir=tmp_path / "c", endpoint_url=None, watch=w,
                             stop=threading.Event(), backoff=FAST, resolve=resolve)
    assert model is not None and model.path == repo / "models" / "m" / "v1"
    assert w.checks == 3 and not w.waiting


def test_passing_faults_are_retried_but_corruption_is_final(tmp_path: Path) -> None:
    outcomes: list[Exception] = [ConnectionError("endpoint down"), ArtifactIntegrityError("s3://x: sha256 bad")]
    w = watch()

    def resolve(uri: str, **kw: Any) -> Any:
        raise outcomes.pop(0)

    with pytest.raises(ArtifactIntegrityError, match="sha256 bad"):
        wait_for_weights("u", cache_dir=tmp_path, endpoint_url=None, watch=w, stop=threading.Event(),
                         backoff=FAST, resolve=resolve)
    assert w.last_error == "ConnectionError: endpoint down" and w.checks == 2


def test_stop_ends_the_wait_promptly(tmp_path: Path) -> None:
    stop = threading.Event()

    def resolve(uri: str, **kw: Any) -> Any:
        raise ArtifactNotFound("not yet", missing="x", command=None)

    threading.Timer(0.2, stop.set).start()
    t0 = time.monotonic()
    assert wait_for_weights("u", cache_dir=tmp_path, endpoint_url=None, watch=watch(), stop=stop,
                            backoff=Backoff(initial_s=0.05, max_s=5), resolve=resolve) is None
    assert time.monotonic() - t0 < 6


def test_a_replica_waiting_for_its_artifact_says_which_object_and_who_writes_it() -> None:
    """GIVEN a cluster replica whose compiled artifact is not published yet
    WHEN it answers a request meanwhile
    THEN the 503 body says it waits for the artifact (not the weights), names the absent manifest and the compile
    Job, and that replicas never write it."""
    from eks_inference.serving.weights import ArtifactWatch

    w = ArtifactWatch(model="minilm", missing="s3://b/artifacts/minilm/v1/k/manifest.json",
                      command="the compile Job of minilm-graviton", reason="r")
    body = w.body(now=w.since + 12)
    assert body["status"] == "waiting_for_artifact" and body["error"]["code"] == "artifact_not_compiled"
    message = body["error"]["message"]
    assert "s3://b/artifacts/minilm/v1/k/manifest.json does not exist" in message
    assert "the compile Job of minilm-graviton writes it, replicas never do" in message
    assert body["waiting_s"] == 12 and body["missing"] == w.missing
    assert watch().body()["status"] == "waiting_for_weights"


def test_the_weights_wait_refuses_weights_of_another_digest_for_good(tmp_path: Path) -> None:
    """GIVEN weights published while a replica waits, but not the ones its config pins
    WHEN the poll finds them
    THEN the integrity error is final (the replica fails its health check), not retried."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text("{}")
    repo = tmp_path / "repo"
    publish_model(src, str(repo), name="m", revision="v1")
    with pytest.raises(ArtifactIntegrityError, match=f"pins {'0' * 64}"):
        wait_for_weights(str(repo / "models" / "m" / "v1"), cache_dir=tmp_path / "c", endpoint_url=None,
                         watch=watch(), stop=threading.Event(), backoff=FAST, expected_digest="0" * 64)

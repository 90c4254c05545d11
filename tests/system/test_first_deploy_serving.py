"""A first deploy replayed locally: the RayService's serve config is submitted before anyone has published the
weights, and publishing them later must bring serving up by itself — no restart, no redeploy.

Upstream behaviour this reproduces or relies on (Ray 2.60, KubeRay 1.7):

* ray-project/ray ``python/ray/serve/_private/replica.py`` (``ReplicaBase.initialize``): a replica starts
  with the constructor, then ``reconfigure(user_config)``, then one ``check_health``; an exception in any of
  them is a start failure.
* ray-project/ray ``python/ray/serve/_private/deployment_state.py``: ``record_replica_startup_failure`` counts
  start failures; ``_failed_to_start_threshold`` is ``min(max_constructor_retry_count,
  num_replicas × MAX_PER_REPLICA_RETRY_COUNT)`` (3, ``python/ray/serve/_private/constants.py``); once reached
  while no replica of the version ever started, ``_terminally_failed`` makes the deployment DEPLOY_FAILED and
  no replica is started again. ``ActorReplicaWrapper.check_health`` marks a running replica unhealthy after
  ``REPLICA_HEALTH_CHECK_UNHEALTHY_THRESHOLD`` (3) failed checks in a row; the controller then replaces it
  and the replacement runs its constructor again.
* ray-project/kuberay ``ray-operator/controllers/ray/rayservice_controller.go``
  (``checkIfNeedSubmitServeApplications``): the serve config is submitted again only when nothing is cached,
  no application exists, or the config differs from the cached one — reproduced in :func:`kuberay_resubmits`.
  Publishing weights changes no config, so a replica that had failed for good would never come back.

So the replica must wait (constructor returns, health checks pass) and load the weights when they appear.
These tests run the real Serve controller on the session's Ray, with health checks every second, so a
replica that failed them would be replaced within seconds: the replica id staying the same proves it was not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eks_inference.artifacts.resolve import MANIFEST, model_manifest
from eks_inference.compile.synthetic import write_synthetic_model
from eks_inference.compile.trace import compile_artifact
from eks_inference.config import ModelSpec, Task
from eks_inference.serving.local import DeployFailed, LocalRay, WaitReporter
from eks_inference.serving.serve_config import model_repository_uris
from tests.servers import get, model_config, post

pytestmark = pytest.mark.integration

BUCKET = "first-deploy"
REPO = f"s3://{BUCKET}/repo"
WORDS = ["the", "weights", "arrive", "later", "and", "serving", "starts", "by", "itself"]
TEXTS = ["the weights arrive later", "serving starts by itself", "and"]
SHORT_TIMEOUT_S = 10  # a start-up timeout shorter than the wait for the weights, which the test prolongs past it


def kuberay_resubmits(cached: str, current: str, applications: dict[str, Any]) -> bool:
    """KubeRay's decision to PUT the serve config again (checkIfNeedSubmitServeApplications)."""
    return cached == "" or not applications or cached != current


@pytest.fixture(scope="module")
def s3(moto_s3_endpoint: str) -> Any:
    import boto3

    client = boto3.client("s3", endpoint_url=moto_s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_model(tmp_path_factory.mktemp("tiny-first"), task=Task.EMBEDDING, words=WORDS)


def first_deploy_config(ray: LocalRay, tmp: Path, name: str, endpoint: str) -> dict[str, Any]:
    model_uri, artifact_uri = model_repository_uris(REPO, ModelSpec(name=name, revision="v1"))
    cfg = model_config(ray, tmp, name=name, model_uri=model_uri, artifact_uri=artifact_uri, s3_endpoint_url=endpoint,
                       cache_dir=tmp / "replica", max_batch_size=4, max_seq_length=32)
    app = cfg["applications"][0]
    app["args"]["weights_poll_s"] = [0.5, 2.0]  # the fleet default is [2, 30]; same code, shorter waits
    dep = app["deployments"][0]
    dep.update(health_check_period_s=1, health_check_timeout_s=10, graceful_shutdown_timeout_s=2)
    return cfg


def wait_for(url: str, predicate: Any, timeout_s: float, what: str) -> tuple[int, Any]:
    deadline = time.monotonic() + timeout_s
    last: tuple[int, Any] = (0, None)
    while time.monotonic() < deadline:
        last = get(url)
        if predicate(*last):
            return last
        time.sleep(0.3)
    raise AssertionError(f"{what}: last answer {last}")


def publish_cli(source: Path, name: str, endpoint: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eks_inference.cli", "publish", str(source), "--to", REPO,
                           "--name", name, "--revision", "v1", "--s3-endpoint-url", endpoint],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))


def direct_embeddings(model_dir: Path, texts: list[str], tmp: Path) -> np.ndarray:
    from eks_inference.artifacts.resolve import ArtifactRequest, resolve_artifact, resolve_model, sdk_versions
    from eks_inference.runtime.backends import load_backend
    from eks_inference.runtime.bucketing import seq_buckets_for
    from eks_inference.runtime.engine import Engine

    model = resolve_model(str(model_dir), cache_dir=tmp)
    req = ArtifactRequest(model="direct", revision="v1", task="embedding", processor="cpu", backend="cpu",
                          dtype="fp32", batch_buckets=(1, 2, 4), seq_buckets=seq_buckets_for("cpu", 32),
                          versions=sdk_versions("cpu"))
    art = resolve_artifact(req, model, cache_dir=tmp, artifact_uri=None, compile_fn=compile_artifact)
    eng = Engine(model_dir=model_dir, task=Task.EMBEDDING, backend=load_backend(art.path, art.manifest),
                 batch_buckets=(1, 2, 4), seq_buckets=req.seq_buckets, max_seq_length=32)
    return np.array(eng.run(texts)[0])


def test_serving_waits_for_unpublished_weights_then_serves_without_restart_or_redeploy(
        local_ray: LocalRay, moto_s3_endpoint: str, s3: Any, tiny: Path, tmp_path: Path) -> None:
    name = "first-deploy"
    cfg = first_deploy_config(local_ray, tmp_path, name, moto_s3_endpoint)
    model_uri = cfg["applications"][0]["args"]["model_uri"]
    missing = f"{model_uri}/{MANIFEST}"
    command = (f"eks-inference publish MODEL_DIR --to {REPO} --name {name} --revision v1 "
               f"--s3-endpoint-url {moto_s3_endpoint}")
    url = f"{local_ray.url}/{name}"

    local_ray.deploy(cfg)  # KubeRay's first submission (nothing cached yet)
    cached = json.dumps(cfg, sort_keys=True)
    lines: list[str] = []
    done: dict[str, Any] = {}
    stop_short = threading.Event()

    def local_wait(key: str, timeout_s: float, **kw: Any) -> None:  # what `eks-inference local` runs
        try:
            done[key] = local_ray.wait_ready(name, timeout_s=timeout_s, **kw)
        except Exception as e:
            done[f"{key}_error"] = e

    # Two waiters. The user's has a timeout of the CLI's kind (a ceiling for a hang) and sees the whole story,
    # from a replica that starts at the machine's speed through to serving. The short one starts once the replica
    # waits for the weights, with a timeout far shorter than that wait: outliving it shows the timeout is held
    # while waiting. It is stopped before the publish: what follows (download, compile, load) is start-up proper.
    short = threading.Thread(target=local_wait, args=("short", SHORT_TIMEOUT_S),
                             kwargs={"cancelled": stop_short.is_set})
    waiter = threading.Thread(target=local_wait, args=("ready", 600),
                              kwargs={"not_ready": WaitReporter(lines.append, every_s=3)})
    waiter.start()
    try:
        status, body = wait_for(f"{url}/healthz", lambda s, b: s == 503 and isinstance(b, dict), 300,
                                "the waiting replica never answered")
        short.start()
        assert body["status"] == "waiting_for_weights" and body["error"]["code"] == "weights_not_published"
        assert body["missing"] == missing and body["command"] == command
        assert missing in body["error"]["message"] and command in body["error"]["message"]
        for request in ({"inputs": TEXTS}, {"inputs": "not even valid"}):
            status, answer = post(f"{url}/predict", request)
            assert status == 503 and isinstance(answer, dict), answer
            assert {k: answer[k] for k in ("status", "error", "missing", "command")} == {
                k: body[k] for k in ("status", "error", "missing", "command")}
        _, info = get(f"{url}/info")
        replica = info["replica"]
        assert info["status"] == "waiting_for_weights" and info["weights_digest"] is None and replica

        # an operator edits user_config while the weights are missing: kept, applied once they load
        dep = cfg["applications"][0]["deployments"][0]
        dep["user_config"]["max_batch_size"] = 2
        assert kuberay_resubmits(cached, json.dumps(cfg, sort_keys=True), local_ray.status())
        local_ray.deploy(cfg)
        cached = json.dumps(cfg, sort_keys=True)
        # Keep the weights missing until the short waiter has outlived its timeout twice over and the replica
        # kept looking (>= 3 checks, with backoff). That is also >= 20 health-check periods: a replica failing
        # them would have been replaced by then.
        redeployed = time.monotonic()
        wait_for(f"{url}/healthz", lambda s, b: time.monotonic() - redeployed > 2 * SHORT_TIMEOUT_S
                 and isinstance(b, dict) and b.get("checks", 0) >= 3, 300, "the replica stopped looking")
        st, _ = local_ray.status()[name]
        assert st == "RUNNING"
        assert get(f"{url}/info")[1]["replica"] == replica
        assert not done and short.is_alive() and waiter.is_alive()  # the start-up timeout is held while waiting
        stop_short.set()
        short.join(60)
        assert done == {"short": False}, done  # stopped by us, not timed out

        pub = publish_cli(tiny, name, moto_s3_endpoint)  # docs/deploy.md's step, after the deploy
        assert pub.returncode == 0, pub.stderr
        assert not kuberay_resubmits(cached, json.dumps(cfg, sort_keys=True), local_ray.status())  # no redeploy

        wait_for(f"{url}/healthz", lambda s, b: s == 200, 300, "serving did not come up after the publish")
        waiter.join(300)
        assert done.get("ready") is True, done
        status, answer = post(f"{url}/predict", {"inputs": TEXTS})
        assert status == 200 and isinstance(answer, dict), answer
        np.testing.assert_allclose(np.array(answer["outputs"]), direct_embeddings(tiny, TEXTS, tmp_path / "d"),
                                   atol=1e-5)
        _, info = get(f"{url}/info")
        assert info["replica"] == replica  # the same process: no restart
        assert info["status"] == "ok" and info["weights_digest"]
        assert info["max_batch_size"] == 2  # the user_config that arrived while waiting
        assert info["artifact"]["source"] == "compiled"

        # a later reconfigure still applies in place
        dep["user_config"]["max_batch_size"] = 3
        local_ray.deploy(cfg)
        wait_for(f"{url}/info", lambda s, b: s == 200 and b.get("max_batch_size") == 3, 300, "reconfigure ignored")
        assert get(f"{url}/info")[1]["replica"] == replica
        assert post(f"{url}/predict", {"inputs": TEXTS})[1] == answer
    finally:
        stop_short.set()
        if short.is_alive():
            short.join(1)
        waiter.join(1)
        local_ray.remove(name)

    assert lines[0] == f"waiting for the model's weights: {missing} does not exist yet"
    assert lines[1] == f"  publish them with: {command}"
    assert sum("does not exist yet" in ln for ln in lines) == 1  # the reason once
    assert any(ln.startswith(f"  still waiting for {missing}") for ln in lines)  # progress now and then
    assert lines[-1] == "  weights found; loading the model ..."


def test_weights_that_appear_corrupt_are_never_served(
        local_ray: LocalRay, moto_s3_endpoint: str, s3: Any, tiny: Path, tmp_path: Path) -> None:
    name = "first-deploy-corrupt"
    cfg = first_deploy_config(local_ray, tmp_path, name, moto_s3_endpoint)
    url = f"{local_ray.url}/{name}"
    local_ray.deploy(cfg)
    try:
        wait_for(f"{url}/healthz", lambda s, b: s == 503 and isinstance(b, dict)
                 and b.get("status") == "waiting_for_weights", 300, "the replica never waited")
        # a broken upload: the manifest lists the true hashes, one object holds other bytes
        manifest = model_manifest(tiny, name=name, revision="v1", task="embedding")
        victim = "model.safetensors"
        expected = manifest["files"][victim]["sha256"]
        prefix = f"repo/models/{name}/v1"
        for rel in manifest["files"]:
            data = b"truncated upload" if rel == victim else (tiny / rel).read_bytes()
            s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{rel}", Body=data)
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{MANIFEST}", Body=json.dumps(manifest).encode())
        object_uri = f"s3://{BUCKET}/{prefix}/{victim}"

        _, body = wait_for(f"{url}/healthz", lambda s, b: isinstance(b, dict) and b.get("status") == "failed", 120,
                           "the corrupt weights were not detected")
        message = body["error"]["message"]
        assert message.startswith("ArtifactIntegrityError:") and object_uri in message and expected in message
        status, answer = post(f"{url}/predict", {"inputs": TEXTS})
        assert status == 503 and isinstance(answer, dict) and answer["error"]["code"] == "model_unavailable"
        with pytest.raises(DeployFailed) as e:
            local_ray.wait_ready(name, timeout_s=30)
        assert object_uri in e.value.summary and expected in e.value.summary

        # the failing health check makes Serve replace the replica; the replacement fails in its constructor
        deadline = time.monotonic() + 120
        detail = ""
        while time.monotonic() < deadline and "failed to start" not in detail:
            detail = local_ray.status().get(name, ("", ""))[1]
            time.sleep(1)
        assert "failed to start" in detail and "ArtifactIntegrityError" in detail, detail
        assert object_uri in detail and expected in detail and "refusing to start" in detail
        assert not list((tmp_path / "replica").rglob("model.safetensors"))  # nothing unverified was kept
    finally:
        local_ray.remove(name)

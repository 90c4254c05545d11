"""Serve's autoscaler on the session's real Ray, driven by the project's own load tester over HTTP.

Two ``eks-inference loadtest run`` processes: a trickle that runs throughout, and four closed-loop users (four
requests always in flight, where the target is one per replica, whatever the machine's speed) that stop once the
second replica runs. The replicas the model reports in ``/info`` (the Serve controller's live state, sampled once
a second by the load tester) go from min to max under the load and back to min under the trickle, and no request
fails, not even while a replica drains. The delays are seconds here (minutes in the shipped config); the
autoscaling config is the one render_serve_config writes, the same the RayServices carry. Each phase lasts until
its condition holds: replicas report their load to the controller every 10 s (Serve's ``metrics_interval_s``)
and a busy machine starts a replica slowly, so no fixed schedule fits every machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eks_inference.serving.local import LocalRay
from tests.servers import START_CEILING_S, get, model_config

pytestmark = pytest.mark.integration

NAME = "autoscale"


@pytest.fixture(scope="module")
def scaling_app(local_ray: LocalRay, serving_cache: Path) -> Iterator[str]:
    # The session minilm app's batching shape, so its compiled artifact is reused; one ongoing request per
    # replica is the target, so four requests always in flight ask for a second replica.
    cfg = model_config(local_ray, serving_cache, name=NAME, max_batch_size=8, max_inputs=16,
                       batch_wait_timeout_s=0.002, min_replicas=1, max_replicas=2, target_ongoing_requests=1,
                       upscale_delay_s=1, downscale_delay_s=4, look_back_period_s=3)
    local_ray.deploy(cfg)
    local_ray.wait_ready(NAME, timeout_s=START_CEILING_S)
    yield f"{local_ray.url}/{NAME}"
    local_ray.remove(NAME, wait=True)


def replicas(url: str) -> dict[str, Any]:
    status, body = get(f"{url}/info")
    assert status == 200, body
    return dict(body["replicas"])


def test_info_reports_live_replica_counts(scaling_app: str) -> None:
    r = replicas(scaling_app)
    assert (r["min"], r["max"]) == (1, 2) and r["running"] >= 1 and r["target"] >= 1


def _load(url: str, out: Path, *args: str) -> subprocess.Popen[str]:
    """A load test that runs until it is interrupted (an hour at most), sampling /info's replicas each second."""
    return subprocess.Popen(
        [sys.executable, "-m", "eks_inference.cli", "loadtest", "run", "--url", url, *args, "--duration", "3600",
         "--timeout", "120", "--sample-replicas", "on", "--no-progress", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _replicas_in_any_state() -> int:
    """Replicas Serve holds for the model, a draining one included (/info counts only running and starting)."""
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    assert client is not None
    deployments = client.get_serve_details()["applications"][NAME]["deployments"]
    return sum(len(d["replicas"]) for d in deployments.values())


def _until_running(url: str, n: int, alive: tuple[subprocess.Popen[str], ...] = (), bound_s: float = 300) -> None:
    """Until the model has ``n`` replicas, all running (none starting or draining); ``bound_s`` only bounds a
    hang."""
    deadline = time.monotonic() + bound_s
    while (r := replicas(url))["running"] != n or _replicas_in_any_state() != n:
        for p in alive:
            assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, f"not {n} running replicas after {bound_s:g} s: {r}"
        time.sleep(0.5)


def _stop(proc: subprocess.Popen[str], out: Path) -> dict[str, Any]:
    """Ctrl-C, as a user stops a run: the step measured so far is kept."""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    (step,) = json.loads(out.read_text())["steps"]
    return dict(step)


def test_replicas_follow_the_load_tester_and_scale_in_without_failures(scaling_app: str, tmp_path: Path) -> None:
    _until_running(scaling_app, 1)
    # one request a second: well under one in flight, even while a busy machine makes each take a while
    trickle = _load(scaling_app, tmp_path / "trickle.json", "--rate", "1")
    users = _load(scaling_app, tmp_path / "users.json", "--mode", "closed", "--concurrency", "4")
    try:
        _until_running(scaling_app, 2, (trickle, users))
        heavy = _stop(users, tmp_path / "users.json")
        _until_running(scaling_app, 1, (trickle,))
        light = _stop(trickle, tmp_path / "trickle.json")
    finally:
        for p in (trickle, users):
            if p.poll() is None:
                p.kill()
                p.communicate()
    # The test's own polling saw the scale-out and the scale-in, drain included, while the trickle ran
    # (_until_running checked it was alive). The trickle sampled /info each second; a busy machine answers some
    # of those later than the sampler waits (they are recorded as errors), and what it did see stayed in min..max.
    samples = [s["running"] for s in light["replicas"] if s.get("running") is not None]
    assert light["replicas"] and set(samples) <= {1, 2}, light["replicas"][:5]
    for step in (heavy, light):
        summary = step["summary"]
        assert summary["ok"] > 0 and summary["errors"] == 0, summary  # none failed, not even while draining

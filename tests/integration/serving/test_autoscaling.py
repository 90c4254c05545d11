"""Serve's autoscaler on the session's real Ray, driven by the project's own load tester over HTTP.

One run of ``eks-inference loadtest run --schedule``: a rate one replica cannot hold under the target, then a
trickle. The replicas the model reports in ``/info`` (the Serve controller's live state, sampled once a second
by the load tester) go from min to max during the high segment and back to min during the trickle, and no
request fails, not even while a replica drains. The delays are seconds here (minutes in the shipped config); the
autoscaling config is the one render_serve_config writes, the same the RayServices carry. The high segment lasts
30 s: replicas report their load to the controller every 10 s (Serve's ``metrics_interval_s``), so on a busy
machine a scale-out can take most of 20 s to show.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eks_inference.serving.local import LocalRay
from tests.servers import get, model_config

pytestmark = pytest.mark.integration

NAME = "autoscale"


@pytest.fixture(scope="module")
def scaling_app(local_ray: LocalRay, serving_cache: Path) -> Iterator[str]:
    # The session minilm app's batching shape, so its compiled artifact is reused; one ongoing request per
    # replica is the target, so ~50 req/s (a few tens of ms each) asks for a second replica.
    cfg = model_config(local_ray, serving_cache, name=NAME, max_batch_size=8, max_inputs=16,
                       batch_wait_timeout_s=0.002, min_replicas=1, max_replicas=2, target_ongoing_requests=1,
                       upscale_delay_s=1, downscale_delay_s=4, look_back_period_s=3)
    local_ray.deploy(cfg)
    local_ray.wait_ready(NAME, timeout_s=400)
    yield f"{local_ray.url}/{NAME}"
    local_ray.remove(NAME, wait=True)


def replicas(url: str) -> dict[str, Any]:
    status, body = get(f"{url}/info")
    assert status == 200, body
    return dict(body["replicas"])


def test_info_reports_live_replica_counts(scaling_app: str) -> None:
    r = replicas(scaling_app)
    assert (r["min"], r["max"]) == (1, 2) and r["running"] >= 1 and r["target"] >= 1


def test_replicas_follow_the_load_tester_and_scale_in_without_failures(scaling_app: str, tmp_path: Path) -> None:
    deadline = time.monotonic() + 30
    while replicas(scaling_app)["running"] != 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert replicas(scaling_app)["running"] == 1
    proc = subprocess.run(
        [sys.executable, "-m", "eks_inference.cli", "loadtest", "run", "--url", scaling_app,
         "--schedule", "60:30,4:22", "--timeout", "10", "--no-progress", "--out", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=180, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "r.json").read_text())
    (step,) = doc["steps"]
    started = dt.datetime.fromisoformat(step["started_at"]).timestamp()
    samples = [(s["t"] - started, s["running"]) for s in step["replicas"] if s.get("running") is not None]
    assert len(samples) >= 30, step["replicas"][:5]
    high = [n for t, n in samples if t < 30]
    low_tail = [n for t, n in samples if t >= 44]
    assert max(high) == 2, samples  # scaled out under the high segment
    assert low_tail and low_tail[-1] == 1, samples  # and back to min during the trickle
    assert step["summary"]["errors"] == 0 and step["summary"]["ok"] == step["summary"]["requests"] > 1000
    (seg_high, seg_low) = step["segments"]
    assert seg_low["stats"]["ok"] > 0 and not seg_low["stats"]["errors_by_kind"]  # none failed during scale-in
    assert not seg_high["stats"]["errors_by_kind"]
    deadline = time.monotonic() + 30
    while replicas(scaling_app)["running"] != 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert replicas(scaling_app)["running"] == 1

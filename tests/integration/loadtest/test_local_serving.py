"""The load tester against the real thing: the bundled model on Ray Serve, as ``eks-inference local`` runs it.

The stub server proves the client's accounting; this proves it speaks to the actual serving stack
(uvicorn behind Ray's proxy, its ``/info`` document, real model latency) end to end through the CLI.
Ray itself is the session-wide ``local_ray`` of ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eks_inference.config import ModelSpec, Processor, ServingSpec
from eks_inference.serving.local import LocalRay
from eks_inference.serving.serve_config import render_serve_config
from tests.servers import START_CEILING_S

from .conftest import cli

pytestmark = pytest.mark.integration

APP = "minilm-loadtest"


@pytest.fixture(scope="module")
def minilm_url(local_ray: LocalRay, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cache = tmp_path_factory.mktemp("loadtest-serving")
    spec = ModelSpec(name=APP, processors=(Processor.CPU,),
                     serving=ServingSpec(max_batch_size=8, max_inputs=8, batch_wait_timeout_s=0.002))
    cfg = render_serve_config(spec, Processor.CPU, model_uri="bundled:all-minilm-l6-v2",
                              artifact_uri=str(cache / "repo"), cache_dir=str(cache / "replica-cache"),
                              http_host="127.0.0.1", http_port=local_ray.http_port)
    local_ray.deploy(cfg)
    local_ray.wait_ready(APP, timeout_s=START_CEILING_S)
    yield f"{local_ray.url}/{APP}"
    local_ray.remove(APP)


def _predict_counts(metrics_url: str) -> tuple[float, float]:
    """(requests Serve counted at the app's predict route, requests our replica timed), summed over series."""
    import urllib.request

    from eks_inference import metric_names as names
    from eks_inference.loadgen.server_metrics import parse_exposition

    with urllib.request.urlopen(metrics_url, timeout=10) as r:
        samples = parse_exposition(r.read().decode())
    served = sum(v for (n, labels), v in samples.items() if n == names.SERVE_REQUESTS
                 and dict(labels).get("application") == APP and dict(labels).get("route") == f"/{APP}/predict")
    timed = sum(v for (n, labels), v in samples.items()
                if n == names.exported(names.TIMED_REQUESTS) and dict(labels).get("application") == APP)
    return served, timed


def _until(read: Any, done: Any, *, bound_s: float = 300.0) -> Any:
    """``read()`` once ``done`` holds for it (metrics arrive late on a busy machine); ``bound_s`` bounds a hang."""
    import time

    deadline = time.monotonic() + bound_s
    while not done(now := read()):
        assert time.monotonic() < deadline, f"metrics did not get there in {bound_s:g} s: {now}"
        time.sleep(0.5)
    return now


def _stable(read: Any, *, interval_s: float, bound_s: float = 120.0) -> Any:
    """``read()`` once two reads an export interval apart agree (metrics reach the endpoint up to one interval
    after they are recorded); fails past ``bound_s``."""
    import time

    deadline = time.monotonic() + bound_s
    last = read()
    while time.monotonic() < deadline:
        time.sleep(interval_s + 0.2)
        now = read()
        if now == last:
            return now
        last = now
    raise AssertionError(f"metrics still moving after {bound_s} s: {last}")


def test_the_server_counts_exactly_the_requests_the_load_tester_sent(minilm_url: str, tmp_path: Path) -> None:
    """Real Ray Serve on 127.0.0.1: /info names the local Prometheus endpoint; Serve's request counter and the
    replica's own timing histogram rise by exactly what the load tester sent (its one probe and 30 measured), and
    the step's server_metrics, read by the load tester itself, count the 30 of the step.

    First in this module, so the app has served nothing before: no earlier request can still be on its way to the
    endpoint (late on a busy machine) and land in the difference."""
    from tests.servers import get

    status, info = get(f"{minilm_url}/info")
    assert status == 200 and info["metrics_url"].startswith("http://127.0.0.1:")
    assert info["metrics_urls"] == [info["metrics_url"]] and info["metrics_report_interval_s"] == 1.0
    before = _stable(lambda: _predict_counts(info["metrics_url"]), interval_s=1.0)

    r = cli("loadtest", "run", "--url", minilm_url, "--rate", "10", "--requests", "30", "--warmup", "0",
            "--no-progress", "--out", f"{tmp_path}/results/", timeout=180)
    assert r.returncode == 0, r.stderr

    _until(lambda: _predict_counts(info["metrics_url"]), lambda c: min(c[0] - before[0], c[1] - before[1]) >= 31)
    after = _stable(lambda: _predict_counts(info["metrics_url"]), interval_s=1.0)  # and nothing more arrives
    assert (after[0] - before[0], after[1] - before[1]) == (31, 31)  # the probe and the step
    (doc,) = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")]
    (step,) = doc["steps"]
    srv = step["server_metrics"]
    assert srv["status"] == "ok", srv
    assert (srv["requests"], srv["timed_requests"], srv["responses"]) == (30, 30, {"200": 30})
    assert srv["forwards"] >= 1 and 1 <= srv["mean_batch_size"] <= 8
    assert srv["model_ms"] > 0 and srv["queue_ms"] >= 0 and 0 <= srv["padding_ratio"] < 1
    assert srv["replicas"] == {"start": 1, "end": 1} and srv["urls"] == [info["metrics_url"]]
    split = step["summary"]["server"]["split_ms"]
    assert split["client_mean"] == pytest.approx(split["queue"] + split["model"] + split["network_and_proxy"],
                                                 abs=0.01)

    r = cli("loadtest", "report", str(tmp_path / "results"), "--out", str(tmp_path / "report"), "--quiet")
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "report" / "report.html").read_text()
    assert 'id="server"' in html and "network + proxy ms" in html


def test_run_and_report_against_local_ray_serve(minilm_url: str, tmp_path: Path) -> None:
    r = cli("loadtest", "run", "--url", minilm_url, "--rates", "4,8", "--duration", "3", "--warmup", "1",
            "--inputs-per-request", "2", "--target-name", "local-minilm", "--processor", "cpu",
            "--slo-p99-ms", "5000", "--no-progress", "--json", "--out", f"{tmp_path}/results/", timeout=180)
    assert r.returncode == 0, r.stderr
    summaries: list[dict[str, Any]] = json.loads(r.stdout)
    for s in summaries:
        assert s["requests"] == s["requested_rate"] * 3 and s["ok"] + s["errors"] == s["requests"]
        # A step the host starved (another program crowding both cores) may time out; one it did not, may not.
        assert s["errors"] == 0 or s["contended"], s
        assert s["inferences"] == 2 * s["ok"]
        assert s["latency_ms"]["p50"] > 1.0  # a real forward pass, not a canned answer
    (doc,) = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")]
    info = doc["provenance"]["server_info"]
    assert info["model"] == APP and info["processor"] == "cpu"

    r = cli("loadtest", "report", str(tmp_path / "results"), "--out", str(tmp_path / "report"), "--quiet")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    (target,) = report["targets"]
    assert target["target"]["name"] == "local-minilm"
    if all(s["contended"] for s in summaries):
        # no capacity rests on a starved step, and the report says why there is no best
        assert target["best"] is None and any("contended host" in w for w in report["warnings"]), report["warnings"]
    else:
        # a best step needs one within the SLO, measured on schedule: generous, as the machine may be busy
        assert target["best"] is not None
    assert target["usd_per_million_inferences"] is None  # no instance type: priced n/a, not guessed
    assert (tmp_path / "report" / "report.png").stat().st_size > 0


def test_two_runs_of_the_same_local_server_are_no_regression(minilm_url: str, tmp_path: Path) -> None:
    """``loadtest compare`` on two runs of one unchanged Ray Serve app exits 0; each step recorded its host and the
    server's CPU as Ray's node gauges reported it (the contention record the report and the search read), read
    from the real exporter (ray/dashboard/modules/reporter/reporter_agent.py: node_cpu_utilization)."""
    for side in ("base", "new"):
        r = cli("loadtest", "run", "--url", minilm_url, "--rates", "4,8", "--duration", "3", "--warmup", "1",
                "--target-name", "local-minilm", "--slo-p99-ms", "5000", "--no-progress",
                "--out", f"{tmp_path}/{side}/", timeout=180)
        assert r.returncode == 0, r.stderr
    r = cli("loadtest", "compare", str(tmp_path / "base"), str(tmp_path / "new"), "--json", str(tmp_path / "c.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["regressions"] == [] and doc["targets"][0]["verdict"] in ("same", "improvement")
    results = [json.loads(p.read_text()) for side in ("base", "new") for p in (tmp_path / side).glob("*.json")]
    steps = [step for result in results for step in result["steps"]]
    for step in steps:
        host = step["client"]["host"]
        assert host["client_cores"] >= 1 and host["wall_s"] > 0 and "contention" in step["summary"]
        # The local Ray (its proxy owns the port) was found, so its CPU is the server's, not a neighbour's.
        assert host["server_where"] == "local" and host["server_cpu_s"] is not None, host
        assert step["summary"]["contention"]["foreign_busy"] is not None
    # Ray's exporter reports its node gauges every few seconds and drops them between reports now and then, so a
    # 3 s step may find none (measured: 1 of 4 steps had one); the process tree's CPU above is in every step.
    cpus = [step["summary"]["contention"]["server_cpu"] for step in steps]
    assert any(c is not None for c in cpus), cpus
    assert all(0 <= c["max_node_busy"] <= 1 and c["nodes"] == 1 for c in cpus if c is not None), cpus

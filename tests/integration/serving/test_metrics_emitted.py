"""Every metric a dashboard panel or an alert rule reads is really exported by serving: read from the local Ray's
Prometheus endpoint (the one ``/info`` names) after answered requests and a 4xx, and after a replica died and
Serve replaced it, the event the restart alert watches. Names of the exporters that cannot run here
(neuron-monitor, dcgm-exporter, the kubelet) are checked against their cited lists in
eks_inference/observability/exporters.py instead, and nothing else may be left over."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from eks_inference import metric_names as names
from eks_inference.loadgen.server_metrics import parse_exposition
from eks_inference.observability.dashboards import DASHBOARDS, queries
from eks_inference.observability.exporters import EXTERNAL
from eks_inference.observability.promql import metric_names
from eks_inference.serving.local import LocalRay
from tests.conftest import ROOT

from .conftest import deploy_model, get, post

pytestmark = pytest.mark.integration

APP = "obs-probe"


def read(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return parse_exposition(r.read().decode())


def wait_for(url: str, name: str, *, bound_s: float = 300.0, **labels: str) -> float:
    """The summed value of ``name`` once a series of it (with ``labels``) reached the endpoint (``bound_s`` only
    bounds a hang: a busy machine delivers late)."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        found = [v for (n, lbls), v in read(url).items() if n == name and set(labels.items()) <= lbls]
        if found:
            return sum(found)
        time.sleep(1.0)
    raise AssertionError(f"{name}{labels} did not appear at {url} within {bound_s:g} s")


def replica_actors(app: str) -> list[str]:
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    assert client is not None
    deployments = client.get_serve_details()["applications"][app]["deployments"]
    return [r["actor_name"] for d in deployments.values() for r in d["replicas"] if r.get("state") == "RUNNING"]


@pytest.fixture(scope="module")
def probe(local_ray: LocalRay, serving_cache: Path) -> Iterator[str]:
    """A model of its own, with one replica, whose replica the test kills."""
    deploy_model(local_ray, serving_cache, name=APP, max_batch_size=4, max_inputs=4, batch_wait_timeout_s=0.0)
    yield f"{local_ray.url}/{APP}"
    local_ray.remove(APP)


def wanted() -> set[str]:
    exprs = [q for build in DASHBOARDS.values() for q in queries(build())]
    for env in ("dev", "prod"):
        rules = yaml.safe_load((ROOT / "observability" / "rules" / f"{env}.yaml").read_text())
        exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    return {n for e in exprs for n in metric_names(e)}


def test_every_queried_metric_is_exported_by_local_serving(probe: str, local_ray: LocalRay) -> None:
    import ray

    status, info = get(f"{probe}/info")
    assert status == 200
    url = info["metrics_url"]
    assert url == local_ray.metrics_url and url.startswith("http://127.0.0.1:")
    for i in range(6):
        assert post(f"{probe}/predict", {"inputs": [f"text {i}", "another one"]})[0] == 200
    assert post(f"{probe}/predict", {"inputs": 5})[0] == 422
    # a replica that dies: Serve's next health check of it fails and a new replica takes its place
    before = replica_actors(APP)
    ray.kill(ray.get_actor(before[0], namespace="serve"), no_restart=True)
    failures = wait_for(url, names.SERVE_HEALTH_CHECK_FAILURES, application=APP)
    assert failures >= 1
    deadline = time.monotonic() + 300  # UNHEALTHY until the replacement serves
    while not (local_ray.status()[APP][0] == "RUNNING" and replica_actors(APP) and replica_actors(APP) != before
               and get(f"{probe}/healthz")[0] == 200):
        assert time.monotonic() < deadline, f"{APP} did not recover: {local_ray.status()[APP]}"
        time.sleep(1.0)
    for i in range(3):
        assert post(f"{probe}/predict", {"inputs": [f"after {i}"]})[0] == 200
    wait_for(url, names.SERVE_REPLICA_HEALTHY, application=APP)
    wait_for(url, names.exported(names.TIMED_REQUESTS), application=APP)

    exported = {n for n, _ in read(url)}
    want = wanted()
    ours = want - EXTERNAL
    # Ray's agent keeps a gauge for two report intervals after its last report (ray/_private/telemetry/
    # open_telemetry_metric_recorder.py, _resolve_gauge_ttl_seconds); an emitter late on a busy machine drops it
    # from one read, so a name missing from this read must still show up within a few intervals.
    for name in sorted(ours - exported):
        wait_for(url, name, bound_s=120.0)
        exported.add(name)
    assert ours <= exported, f"queried but not exported: {sorted(ours - exported)}"
    assert want & EXTERNAL, "the accelerator and node panels read the exporters' cited names"
    unknown = [n for n in want if n not in exported and n not in EXTERNAL]
    assert not unknown
    print(json.dumps(sorted(ours)))


def test_info_names_where_the_metrics_are_and_how_often_they_arrive(probe: str, local_ray: LocalRay) -> None:
    status, info = get(f"{probe}/info")
    assert status == 200
    assert info["metrics_urls"] == [info["metrics_url"]]  # one local node
    assert info["metrics_report_interval_s"] == 1.0  # tests/servers.py shortens Ray's 10 s
    text: Any = urllib.request.urlopen(info["metrics_url"], timeout=10).read().decode()
    assert "# TYPE ray_eks_inference_request_queue_ms histogram" in text

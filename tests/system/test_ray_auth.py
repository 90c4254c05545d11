"""Ray token authentication, from the synthesized RayServices to what Ray 2.60 itself accepts.

KubeRay v1.7.0 builds the pods (tests/system/kuberay.py: ``configureTokenAuth``, the per-cluster Secret); the
environment each container gets is then handed to a fresh Python process that asks Ray's own code what it makes of it
(tests/system/ray_auth_probe.py: ``ray._raylet``'s mode, token loader and check; the dashboard's and agent's HTTP
middleware with their own public paths; the token check of ``ray start``; the Prometheus exporter).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from eks_inference.config import RAY_VERSION
from eks_inference.k8s.ray_service import METRICS_AUTH_RAY
from tests.conftest import ROOT, Assembly
from tests.system import kuberay
from tests.system.synthesized import objects

RAY_CONTAINERS = ("ray", "autoscaler", "wait-gcs-ready")
"""Every container of a Ray pod runs Ray code: the node, the autoscaler (a GCS client), the GCS readiness check."""


def ray_services(asm: Assembly) -> list[dict[str, Any]]:
    return objects(asm, "RayService")


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]


def resolved_env(container: dict[str, Any], secrets: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The environment the kubelet gives the container: plain values, and secret keys read from ``secrets``."""
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets[ref["name"]]["stringData"][ref["key"]]
    return env


def probe(env: dict[str, str], home: Path) -> dict[str, Any]:
    """Ray's verdicts in a process with exactly the container's Ray settings (no token file in its home)."""
    home.mkdir(parents=True, exist_ok=True)
    ray_env = {k: v for k, v in env.items() if k.startswith("RAY_AUTH")}
    proc = subprocess.run([sys.executable, "-m", "tests.system.ray_auth_probe"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(home), **ray_env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def built(assemblies: dict[str, Assembly]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod, the Secret KubeRay generated for its Ray cluster) for every pod of dev's RayServices."""
    out = []
    for rs in ray_services(assemblies["dev"]):
        pods = kuberay.build_pods(rs)
        secret = kuberay.auth_secret(pods[0]["metadata"]["labels"]["ray.io/cluster"])
        out += [(pod, secret) for pod in pods]
    return out


def test_every_ray_process_gets_its_clusters_token(built: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """GIVEN dev's RayServices WHEN KubeRay builds their pods THEN every container (the node, the autoscaler sidecar,
    the workers' GCS wait) runs with RAY_AUTH_MODE=token and the token of its own Ray cluster's Secret, and nothing
    in our templates overrides either."""
    assert len(built) == 4
    for pod, _ in built:
        cluster = pod["metadata"]["labels"]["ray.io/cluster"]
        names = [c["name"] for c in containers(pod)]
        assert set(names) <= set(RAY_CONTAINERS) and "ray" in names, names
        assert ("wait-gcs-ready" in names) is (not pod["head"]) and ("autoscaler" in names) is pod["head"]
        for c in containers(pod):
            env = [e for e in c["env"] if e["name"].startswith("RAY_AUTH")]
            assert env == [{"name": "RAY_AUTH_MODE", "value": "token"},
                           {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {
                               "name": cluster, "key": kuberay.AUTH_TOKEN_KEY}}}], (pod["metadata"]["name"], c["name"])


def test_ray_accepts_the_token_and_refuses_the_dashboard_to_anyone_without_it(
        built: list[tuple[dict[str, Any], dict[str, Any]]], tmp_path: Path) -> None:
    """GIVEN a head's Ray container with the token KubeRay generates WHEN Ray reads its environment THEN ``ray start``
    finds the token, Ray runs in token mode and accepts exactly that token; the dashboard refuses job submission and
    ``PUT /api/serve/applications/`` without it (401) or with another (403), accepts them with the header the KubeRay
    operator sends, and leaves open the health paths the kubelet probes (our head readiness probe, KubeRay's liveness
    probe on the dashboard agent)."""
    head, secret = next((p, s) for p, s in built if p["head"])
    ray = head["spec"]["containers"][0]
    env = resolved_env(ray, {secret["metadata"]["name"]: secret})
    got = probe(env, tmp_path / "home")
    assert (got["start"], got["mode"], got["has_token"]) == ("ok", "token", True)
    assert got["accepts"] == {"kuberay": True, "wrong": False}
    for call in ("PUT /api/serve/applications/", "POST /api/jobs/"):
        assert (got["head"][f"{call} none"], got["head"][f"{call} wrong"], got["head"][f"{call} kuberay"]) == (
            401, 403, 200), call
    assert (got["agent"]["POST /api/job_agent/jobs/ none"], got["agent"]["POST /api/job_agent/jobs/ kuberay"]) == (
        401, 200)
    readiness, liveness = ray["readinessProbe"]["httpGet"]["path"], ray["livenessProbe"]["httpGet"]["path"]
    assert got["head"][f"GET {readiness} none"] == 200 and got["agent"][f"GET {liveness} none"] == 200
    worker, secret = next((p, s) for p, s in built if not p["head"])
    for c in containers(worker):
        assert probe(resolved_env(c, {secret["metadata"]["name"]: secret}), tmp_path / c["name"])["start"] == "ok"


def test_without_auth_options_anyone_who_reaches_the_dashboard_may_deploy(assemblies: dict[str, Assembly],
                                                                           tmp_path: Path) -> None:
    """What the RayServices were before: no authOptions, so KubeRay sets no RAY_AUTH_MODE, ``ray start`` leaves
    authentication off (no token file in the pod's home), and the dashboard takes a Serve deployment from anyone."""
    rs = copy.deepcopy(ray_services(assemblies["dev"])[0])
    del rs["spec"]["rayClusterConfig"]["authOptions"]
    head = kuberay.build_pods(rs)[0]
    env = resolved_env(head["spec"]["containers"][0], {})
    assert not any(k.startswith("RAY_AUTH") for k in env)
    got = probe(env, tmp_path / "home")
    assert got["mode"] == "disabled" and got["head"]["PUT /api/serve/applications/ none"] == 200


def test_metrics_stay_readable_without_the_token(assemblies: dict[str, Assembly],
                                                 built: list[tuple[dict[str, Any], dict[str, Any]]],
                                                 tmp_path: Path) -> None:
    """The scraper sends no Ray token (it can present only its own Kubernetes token), and neither do the load-test
    clients: with token auth on, Ray 2.60's exporter must still answer them. If a Ray upgrade puts the metrics behind
    the token (Ray's documentation announces it for 2.61), this test fails before the scraper silently goes dark; so
    does RayServiceSpec (METRICS_AUTH_RAY)."""
    assert tuple(int(x) for x in RAY_VERSION.split(".")) < METRICS_AUTH_RAY
    resources = assemblies["dev"].template("-Cluster")["Resources"].values()
    (blob,) = [r["Properties"]["ScrapeConfiguration"]["ConfigurationBlob"] for r in resources
               if r["Type"] == "AWS::APS::Scraper"]
    (ray_job,) = [j for j in yaml.safe_load(blob)["scrape_configs"] if j["job_name"] == "ray"]
    assert "authorization" not in ray_job and "bearer_token" not in ray_job
    pod, secret = built[0]
    got = probe(resolved_env(pod["spec"]["containers"][0], {secret["metadata"]["name"]: secret}), tmp_path / "home")
    assert got["mode"] == "token" and got["metrics"] == 200

"""A family's routing in config (``family.routing``): parsed and validated in one line per mistake, rendered into the
serve config, and turned into its RayService's Ray environment: ``model-aware`` runs Serve's Python proxy on every
node (HAProxy and direct ingress off, as Ray 2.60 itself reads them), ``model-blind`` keeps HAProxy like every other
model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from eks_inference.config import ConfigError, FamilyRouting, Processor, parse_model
from eks_inference.serving.serve_config import (
    MODEL_AWARE_ENV,
    RAY_CLUSTER_ENV,
    model_aware_app,
    ray_cluster_env,
    render_serve_config,
)
from tests.unit.k8s_support import REPOSITORY, crd_errors, crd_validator, render
from tests.unit.test_family_config import FAMILY, dev_with_family


def ray_envs(manifests: list[dict[str, Any]], service: str) -> dict[str, dict[str, str]]:
    """The head's and the workers' Ray container environment of one RayService."""
    (rs,) = [m for m in manifests if m["kind"] == "RayService" and m["metadata"]["name"] == service]
    cluster = rs["spec"]["rayClusterConfig"]
    pods = {"head": cluster["headGroupSpec"]["template"],
            **{g["groupName"]: g["template"] for g in cluster["workerGroupSpecs"]}}
    out = {}
    for group, template in pods.items():
        (ray,) = [c for c in template["spec"]["containers"] if c["name"] == "ray"]
        out[group] = {e["name"]: e["value"] for e in ray.get("env", []) if "value" in e}
    return out


def test_routing_defaults_to_model_blind_and_parses_model_aware() -> None:
    assert parse_model(FAMILY).family.routing is FamilyRouting.MODEL_BLIND
    spec = parse_model({**FAMILY, "family": {"memory_budget": "4GiB", "routing": "model-aware"}})
    assert spec.family.routing is FamilyRouting.MODEL_AWARE and spec.family.model_aware


def test_a_bad_routing_is_one_line_naming_the_choices() -> None:
    with pytest.raises(ConfigError) as e:
        parse_model({**FAMILY, "family": {"memory_budget": "4GiB", "routing": "sticky"}})
    assert list(e.value.errors) == ["model 'tenants' family routing: 'sticky' is not a routing; "
                              "use one of model-blind, model-aware"]
    with pytest.raises(ConfigError) as e:
        parse_model({**FAMILY, "family": {"memory_budget": "a lot", "routing": ["model-aware"]}})
    assert len(e.value.errors) == 2, e.value.errors  # the budget and the routing, one line each


def test_the_serve_config_names_the_routing_and_local_mode_reads_it() -> None:
    for routing, aware in (("model-blind", False), ("model-aware", True)):
        spec = parse_model({**FAMILY, "processors": ["cpu"],
                            "family": {"memory_budget": "4GiB", "routing": routing}})
        cfg = render_serve_config(spec, Processor.CPU, model_uri=f"{REPOSITORY}/models/tenants")
        app = cfg["applications"][0]
        assert app["args"]["family"]["routing"] == routing
        assert model_aware_app(app) is aware
        assert cfg["proxy_location"] == "EveryNode"  # a model-aware cluster's proxies run on every node
    assert model_aware_app({"args": {"model": "one"}}) is False


def test_a_model_aware_family_runs_the_python_proxy_and_every_other_service_keeps_haproxy() -> None:
    _, manifests, _ = render(dev_with_family(routing="model-aware"))
    for service in ("tenants-graviton", "tenants-inferentia"):
        for group, env in ray_envs(manifests, service).items():
            assert {k: env.get(k) for k in MODEL_AWARE_ENV} == MODEL_AWARE_ENV, (service, group)
            assert not [k for k in env if k.startswith("RAY_SERVE_HAPROXY_")], (service, group)
            assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    others = {m["metadata"]["name"] for m in manifests if m["kind"] == "RayService"} - {
        "tenants-graviton", "tenants-inferentia"}
    assert others
    for service in others:
        for group, env in ray_envs(manifests, service).items():
            assert {k: env.get(k) for k in RAY_CLUSTER_ENV} == RAY_CLUSTER_ENV, (service, group)
            assert "RAY_SERVE_ENABLE_DIRECT_INGRESS" not in env
    validator = crd_validator("ray.io_rayservices.yaml")
    if validator is not None:
        for m in manifests:
            if m["kind"] == "RayService" and m["metadata"]["name"].startswith("tenants-"):
                assert crd_errors(validator, m) == []
    # model-blind (the default) renders what every model gets
    _, blind, _ = render(dev_with_family())
    for env in ray_envs(blind, "tenants-graviton").values():
        assert {k: env.get(k) for k in RAY_CLUSTER_ENV} == RAY_CLUSTER_ENV


READ_BACK = """
import json
from ray.serve._private import constants as c
print(json.dumps({"ha_proxy": c.RAY_SERVE_ENABLE_HA_PROXY, "direct_ingress": c.RAY_SERVE_ENABLE_DIRECT_INGRESS}))
"""


@pytest.mark.parametrize("model_aware", [False, True])
def test_ray_reads_the_rendered_environment_as_meant(model_aware: bool, tmp_path: Any) -> None:
    """Ray 2.60 reads these at import (``ray/serve/_private/constants.py``): the throughput mode turns direct ingress
    on, and HAProxy forces it on; a model-aware family's environment must turn both off, or the controller would
    start a single Python proxy on the head only (``ray/serve/_private/controller.py``)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           **ray_cluster_env(model_aware=model_aware)}
    proc = subprocess.run([sys.executable, "-c", READ_BACK], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == ({"ha_proxy": False, "direct_ingress": False} if model_aware
                   else {"ha_proxy": True, "direct_ingress": True})


LOCAL_ENV = """
import json, os
from eks_inference.serving.local import ray_environment
ray_environment(model_aware=True)
print(json.dumps({k: os.environ.get(k) for k in ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_ENABLE_DIRECT_INGRESS",
                                                 "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S")}))
"""


def test_local_mode_serves_a_model_aware_family_through_the_python_proxy_even_over_an_inherited_haproxy(
        tmp_path: Any) -> None:
    """``eks-inference local`` of a model-aware family (``run_foreground`` reads ``args.family.routing``) gives its
    private Ray the cluster's model-aware environment, over an HAProxy setting its shell or parent had set."""
    from tests.conftest import ROOT

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
           "RAY_SERVE_ENABLE_HA_PROXY": "1"}
    proc = subprocess.run([sys.executable, "-c", LOCAL_ENV], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {**MODEL_AWARE_ENV, "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": None}

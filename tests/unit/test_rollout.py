"""Rollouts, the pure parts: the ``rollout`` config block, the canary objects and route weights of each stage
(checked against the upstream CRDs), the alerts answer, the plan and the state machine's refusals. The rollout
itself runs against local serving in ``tests/integration/ops/test_rollout_local.py``."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import cdk8s
import pytest
import yaml

from eks_inference.cli import main
from eks_inference.config import ConfigError, RolloutSpec
from eks_inference.k8s.compile_chart import compile_job
from eks_inference.k8s.front_door_chart import FrontDoorChart
from eks_inference.k8s.rollout import (
    COMPILE_TARGET_LABEL,
    MAX_WEIGHT,
    canary_compile_job,
    canary_names,
    canary_ray_service,
    canary_share,
    canary_target_group,
    configured_weights,
    serve_config_revision,
    stable_ray_service,
    weighted_route,
)
from eks_inference.k8s.serving_chart import COMPILE_TARGET_LABEL as SERVING_COMPILE_TARGET_LABEL
from eks_inference.k8s.serving_chart import plan_targets, service_name
from eks_inference.ops.effects import ray_service_effects, route_effects
from eks_inference.ops.kube import expand_embedded
from eks_inference.ops.rollout import (
    Rollout,
    StepFailed,
    VerifyOutcome,
    check_alert_names,
    firing_for,
    new_state,
    read_state,
    state_path,
)
from eks_inference.ops.tree import diff
from tests.unit.k8s_support import (
    GATEWAY_API_CRDS,
    IMAGES,
    LBC_CRDS,
    REPOSITORY,
    config,
    crd_errors,
    crd_validator,
    gcs_store,
    validate_core,
)

SUBNETS = ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0aaaaaaaaaaaaaaa2"]


def deployed(env_name: str = "prod") -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(RayServices, TargetGroupConfigurations, HTTPRoute) of minilm as the stack renders them."""
    cfg = config(env_name)
    targets = plan_targets(cfg, images=IMAGES, repository_uri=REPOSITORY, region=cfg.region, gcs_store=gcs_store(cfg))
    door = FrontDoorChart(cdk8s.App(), "front-door", door=cfg.front_door, targets=targets, subnet_ids=SUBNETS)
    manifests = door.manifests()
    (route,) = [m for m in manifests if m["kind"] == "HTTPRoute"]
    return ([t.ray_service.to_dict() for t in targets],
            [m for m in manifests if m["kind"] == "TargetGroupConfiguration"], route)


# --- config ---------------------------------------------------------------------------------------------------

def test_the_rollout_block_reports_every_mistake_on_a_line_of_its_own() -> None:
    with pytest.raises(ConfigError) as e:
        config("dev", rollout={"canary_percent": 100, "bake_minutes": -1, "alerts": ["ModelShedding", "Model Shed",
                                                                                      "ModelShedding"]})
    lines = e.value.errors
    assert any(line.startswith("rollout.canary_percent: 100 is not a share in (0, 100) percent") for line in lines)
    assert any(line.startswith("rollout.bake_minutes: -1 is not a duration") for line in lines)
    assert any(line.startswith("rollout.alerts: 'Model Shed' is not an alert name") for line in lines)
    assert any("repeats an alert" in line for line in lines)
    with pytest.raises(ConfigError, match=r"rollout.alerts: 'ModelShedding' is not a list"):
        config("dev", rollout={"alerts": "ModelShedding"})
    with pytest.raises(ConfigError, match="bake_minuts"):
        config("dev", rollout={"bake_minuts": 5})


def test_each_environment_says_how_it_rolls_out_and_gates_on_alerts_its_rules_define() -> None:
    dev, prod = config("dev"), config("prod")
    assert dev.rollout.bake_minutes < prod.rollout.bake_minutes
    for cfg in (dev, prod):
        check_alert_names(cfg)
    with pytest.raises(ConfigError, match=r"rollout\.alerts: 'LatencyBad' is not an alert of this environment's rules"):
        check_alert_names(config("dev", rollout={"alerts": ["ModelShedding", "LatencyBad"]}))
    assert RolloutSpec(bake_minutes=0.5).bake_s == 30


def test_a_rollout_names_a_served_model_and_a_new_revision() -> None:
    cfg = config("dev")
    assert canary_names(cfg.models[0]) == [f"{service_name(cfg.models[0], p)}-canary" for p in cfg.models[0].processors]
    long = config("dev", models=[{"name": "a-model-name-of-thirty-three-char", "processors": ["inferentia"]}])
    with pytest.raises(ConfigError) as e:
        new_state(long, "a-model-name-of-thirty-three-char", "v2")
    assert list(e.value.errors) == ["model 'a-model-name-of-thirty-three-char': its canary RayService "
                              "'a-model-name-of-thirty-three-char-inferentia-canary' has 51 characters, over KubeRay's "
                              "47; shorten the model's name to roll it out"]
    with pytest.raises(ConfigError, match="--model: 'bert' is not served in 'dev'; use one of minilm"):
        new_state(cfg, "bert", "v2")
    with pytest.raises(ConfigError, match="'v1' is the revision 'minilm' already serves"):
        new_state(cfg, "minilm", "v1")


# --- the objects ------------------------------------------------------------------------------------------------

def test_the_canary_is_the_deployed_rayservice_with_the_new_revision_and_passes_the_kuberay_crd() -> None:
    """GIVEN prod's RayServices as deployed WHEN a rollout of v2 copies them THEN each canary is named <target>-canary,
    serves models/minilm/v2 with the pinned digest, starts one worker, keeps the target's labels (its
    NetworkPolicies select it) and validates against KubeRay v1.7's RayService CRD."""
    ray_services, _, _ = deployed()
    validator = crd_validator("ray.io_rayservices.yaml")
    assert validator is not None
    digest = "a" * 64
    for rs in ray_services:
        canary = canary_ray_service(rs, model="minilm", revision="v2", weights_sha256=digest)
        assert canary["metadata"]["name"] == rs["metadata"]["name"] + "-canary"
        assert canary["metadata"]["labels"]["eks-inference/service"] == rs["metadata"]["name"]
        assert canary["metadata"]["labels"]["eks-inference/rollout"] == "canary"
        doc = yaml.safe_load(canary["spec"]["serveConfigV2"])
        (app,) = [a for a in doc["applications"] if a["name"] == "minilm"]
        assert app["args"]["model_uri"] == f"{REPOSITORY}/models/minilm/v2"
        assert app["args"]["weights_sha256"] == digest and serve_config_revision(doc, "minilm") == "v2"
        assert [g["minReplicas"] for g in canary["spec"]["rayClusterConfig"]["workerGroupSpecs"]] == [1]
        assert crd_errors(validator, canary) == []
        # the promotion's stable: serveConfigV2 is all that changes, which KubeRay applies in place
        stable = stable_ray_service({**rs, "status": {"x": 1}}, model="minilm", revision="v2", weights_sha256=digest)
        assert {k: v for k, v in stable["spec"].items() if k != "serveConfigV2"} == {
            k: v for k, v in rs["spec"].items() if k != "serveConfigV2"}
        assert "status" not in stable and crd_errors(validator, stable) == []


def test_the_promotion_changes_the_current_rayservice_in_place_without_a_new_cluster() -> None:
    """GIVEN prod's RayServices WHEN the promotion gives them the new revision THEN what KubeRay compares for a new
    cluster (the hashed view of ``rayClusterConfig``, reproduced in :mod:`eks_inference.ops.effects` from KubeRay
    v1.7.0) is unchanged, and Serve rebuilds the model's application in place: no second set of Inferentia nodes."""
    ray_services, _, _ = deployed()
    for rs in ray_services:
        after = stable_ray_service(rs, model="minilm", revision="v2", weights_sha256=None)
        old, new = expand_embedded(rs), expand_embedded(after)
        effects = ray_service_effects(old, new, diff(old, new))
        assert [e.kind for e in effects] == ["serve-restart"], [e.text for e in effects]
        assert "rebuilt" in effects[0].text


def test_the_canary_has_a_compile_job_of_its_own_for_the_new_revision() -> None:
    """GIVEN a target's compile Job as the API server returns it (selector and controller labels added) WHEN the
    canary's is made THEN it compiles v2 with the pinned digest under a name of its own, carries no generated
    selector or label, and passes the core Job schema: replicas never compile, so without it the canary would wait
    for an artifact nobody writes."""
    assert COMPILE_TARGET_LABEL == SERVING_COMPILE_TARGET_LABEL
    cfg = config("prod")
    targets = plan_targets(cfg, images=IMAGES, repository_uri=REPOSITORY, region=cfg.region, gcs_store=gcs_store(cfg))
    for t in targets:
        job = compile_job(t, region=cfg.region)
        served = copy.deepcopy(job)
        uid = {"batch.kubernetes.io/controller-uid": "1234", "controller-uid": "1234", "job-name": "x"}
        served["spec"]["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": "1234"}}
        served["spec"]["template"]["metadata"]["labels"].update(uid)
        served["metadata"].update(uid={"x": 1}, resourceVersion="7", creationTimestamp="2026-12-07T00:00:00Z")
        canary = canary_compile_job(served, model="minilm", revision="v2", weights_sha256="c" * 64)
        assert canary["metadata"]["name"].startswith(f"compile-{t.name}-canary-")
        assert canary["metadata"]["name"] != job["metadata"]["name"] and len(canary["metadata"]["name"]) <= 63
        assert "selector" not in canary["spec"] and not set(uid) & set(canary["spec"]["template"]["metadata"]["labels"])
        assert canary["spec"]["template"]["metadata"]["labels"][COMPILE_TARGET_LABEL] == f"{t.name}-canary"
        args = canary["spec"]["template"]["spec"]["containers"][0]["args"]
        app = json.loads(args[args.index("--serve-app") + 1])
        assert app["args"]["revision"] == "v2" and app["args"]["weights_sha256"] == "c" * 64
        assert app["args"]["model_uri"] == f"{REPOSITORY}/models/minilm/v2"
        validate_core(canary)
    with pytest.raises(ConfigError, match="no --serve-app to revise"):
        canary_compile_job({"metadata": {"name": "x"}, "spec": {"template": {"spec": {"containers": []}}}},
                           model="minilm", revision="v2", weights_sha256=None)


def test_the_canary_target_group_and_every_route_stage_pass_the_upstream_crds() -> None:
    _, groups, route = deployed()
    tgc = crd_validator("gateway.k8s.aws_targetgroupconfigurations.yaml", directory=LBC_CRDS)
    routes = crd_validator("gateway.networking.k8s.io_httproutes.yaml", directory=GATEWAY_API_CRDS)
    assert tgc is not None and routes is not None
    for g in groups:
        canary = canary_target_group(g)
        assert canary["spec"]["targetReference"]["name"].endswith("-canary-serve-svc")
        assert canary["spec"]["defaultConfiguration"] == g["spec"]["defaultConfiguration"]
        assert crd_errors(tgc, canary) == []
    for share in (10, 37.5, 100, 0):
        staged = weighted_route(route, share)
        assert crd_errors(routes, staged) == []
        assert canary_share(staged) == pytest.approx(share, abs=0.2)
        # the load balancer controller refuses a weight over 999 (pkg/gateway/routeutils/backend.go, maxWeight)
        assert max(r["weight"] for r in staged["spec"]["rules"][0]["backendRefs"]) <= MAX_WEIGHT


def test_each_processor_keeps_its_configured_share_on_both_sides_and_zero_restores_the_route() -> None:
    _, _, route = deployed("dev")  # graviton 80, inferentia 20
    split = weighted_route(route, 10)
    weights = {r["name"]: r["weight"] for r in split["spec"]["rules"][0]["backendRefs"]}
    assert weights == {"minilm-graviton-serve-svc": 36, "minilm-graviton-canary-serve-svc": 4,
                       "minilm-inferentia-serve-svc": 9, "minilm-inferentia-canary-serve-svc": 1}
    assert configured_weights(split) == configured_weights(route) == {
        "0": {"minilm-graviton": 80, "minilm-inferentia": 20}}
    odd = weighted_route(weighted_route(route, 2.5), 97.3)  # every stage from config's weights, not the last stage's
    assert max(r["weight"] for r in odd["spec"]["rules"][0]["backendRefs"]) <= MAX_WEIGHT
    assert canary_share(odd) == pytest.approx(97.3, abs=0.2)
    assert weighted_route(weighted_route(split, 100), 0) == route
    bare = copy.deepcopy(split)
    del bare["metadata"]["annotations"]
    with pytest.raises(ConfigError, match="has canary backends but no eks-inference/configured-weights annotation"):
        weighted_route(bare, 0)
    with pytest.raises(ConfigError, match="is not in"):
        weighted_route(route, 120)


def test_the_diff_names_a_canary_start_a_promote_and_a_rollback() -> None:
    _, _, route = deployed("dev")
    start, promote = weighted_route(route, 10), weighted_route(route, 100)
    [e] = route_effects(route, start)
    assert e.kind == "traffic" and e.text.startswith("canary start: the new revision takes 10% of /minilm/*: ")
    assert "graviton 80% → 72%" in e.text and "graviton-canary 0% → 8%" in e.text
    [e] = route_effects(start, promote)
    assert e.text.startswith("canary promote: the new revision takes all of /minilm/* (was 10%)")
    [e] = route_effects(start, route)
    assert e.text.startswith("canary end: its 10% of /minilm/* goes back to the current RayServices")
    assert "inferentia-canary 2% → 0%" in e.text


# --- alerts ---------------------------------------------------------------------------------------------------

def test_only_firing_gating_alerts_of_the_model_count() -> None:
    doc = {"status": "success", "data": {"alerts": [
        {"labels": {"alertname": "ModelShedding", "application": "minilm", "processor": "inferentia"},
         "annotations": {"summary": "minilm: predict requests answered 503"}, "state": "firing"},
        {"labels": {"alertname": "ModelLatencyOverSlo", "application": "minilm"}, "state": "pending"},
        {"labels": {"alertname": "ModelShedding", "application": "bert"}, "state": "firing"},
        {"labels": {"alertname": "MetricsTargetDown", "job": "ray"}, "state": "firing"},
    ]}}
    assert firing_for(doc, ["ModelShedding", "ModelLatencyOverSlo"], "minilm") == [
        "ModelShedding (application=minilm, processor=inferentia): minilm: predict requests answered 503"]
    assert firing_for(doc, ["MetricsTargetDown"], "minilm") == ["MetricsTargetDown ()"]
    with pytest.raises(StepFailed, match="not a Prometheus alerts list"):
        firing_for({"status": "error", "error": "bad query"}, ["ModelShedding"], "minilm")


# --- the state machine's refusals, the plan and the CLI ------------------------------------------------------------

class _Unreachable:
    """A backend a refused command must not touch."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"{name} called")


def test_promote_and_rollback_refuse_what_they_cannot_do(tmp_path: Path) -> None:
    cfg = config("dev")
    s = new_state(cfg, "minilm", "v2")
    path = state_path(tmp_path, "dev", "minilm")
    with pytest.raises(ConfigError, match="only a canary that is verified and routed can be promoted"):
        Rollout(s, _Unreachable(), path).promote_now()
    s.done = ["deploy-canary", "verify", "route-canary", "bake", "route-all-to-canary", "update-stable"]
    with pytest.raises(ConfigError, match="past update-stable"):
        Rollout(s, _Unreachable(), path).roll_back_now()
    assert VerifyOutcome(False, "x").passed is False


def test_a_state_file_round_trips_and_a_foreign_file_is_one_line(tmp_path: Path) -> None:
    s = new_state(config("prod"), "minilm", "v2", weights_sha256="b" * 64)
    path = state_path(tmp_path, "prod", "minilm")
    Rollout(s, _Unreachable(), path)._note("planned")
    again = read_state(path)
    assert again is not None and again.to_doc() == s.to_doc() and again.bake_s == 30 * 60
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ConfigError, match="not a rollout state file"):
        read_state(path)


def test_dry_run_prints_the_plan_and_its_traffic_and_changes_nothing(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["rollout", "start", "--env", "dev", "--model", "minilm", "--revision", "v2", "--dry-run",
               "--state-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.splitlines()[0] == "rollout of minilm in dev: revision v1 -> v2"
    assert "traffic: canary start: the new revision takes 10% of /minilm/*" in out
    assert "traffic: canary promote: the new revision takes all of /minilm/*" in out
    assert "rollback traffic: canary end: its 10% of /minilm/*" in out
    assert not any(tmp_path.iterdir())


def test_the_cli_refuses_a_real_start_without_an_alerts_source(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["rollout", "start", "--env", "dev", "--model", "minilm", "--revision", "v2",
               "--state-dir", str(tmp_path)])
    assert rc == 2 and "--alerts-url: missing" in capsys.readouterr().err
    assert main(["rollout", "status", "--env", "dev", "--model", "minilm", "--state-dir", str(tmp_path)]) == 0
    assert "no rollout of minilm in dev" in capsys.readouterr().out

"""A declarative canary: a model's ``canary`` in cdk.json is what synth renders (the canary RayService, its
TargetGroupConfiguration and compile Job, the route at ``rollout.canary_percent``), valid against the upstream CRDs;
the cluster backend applies the same objects; and ``eks-inference rollout`` keeps cdk.json in step.

dev is synthesized with a canary once per session, by the real app in a child process
(``canary_assembly`` in tests/conftest.py); the diff of adding, promoting and removing it is in
tests/unit/test_ops_diff_traffic.py."""

from __future__ import annotations

import argparse
import copy
import json
import shutil
from pathlib import Path
from typing import Any

import cdk8s
import pytest
import yaml

from eks_inference.cli.rollout import write_config
from eks_inference.config import (
    ENVIRONMENTS_KEY,
    ConfigError,
    config_from_context,
    load_config,
    read_project_context,
)
from eks_inference.k8s.compile_chart import compile_job
from eks_inference.k8s.front_door_chart import FrontDoorChart
from eks_inference.k8s.rollout import (
    CDK_PRUNE_LABEL,
    MAX_WEIGHT,
    WEIGHTS_ANNOTATION,
    canary_compile_job,
    canary_ray_service,
    canary_share,
    canary_target_group,
)
from eks_inference.k8s.serving_chart import ServingChart, plan_canaries, plan_targets
from eks_inference.ops.rollout import RolloutState
from tests.conftest import CANARY, CANARY_DIGEST, ROOT, Assembly, cdk_context, with_canary
from tests.unit.k8s_support import (
    GATEWAY_API_CRDS,
    IMAGES,
    LBC_CRDS,
    REPOSITORY,
    crd_errors,
    crd_validator,
    gcs_store,
    validate_core,
)
from tests.unit.test_checkov import CLOUDFORMATION_SKIPS, KUBERNETES_SKIPS, run_checkov
from tests.unit.test_ops_diff import manifest_docs

DIGEST = CANARY_DIGEST
TARGETS = ("minilm-graviton", "minilm-inferentia")


def objects(asm: Assembly) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """Every Kubernetes object of the Inference stack by (kind, name): (the manifest resource holding it, the object;
    deploy-time tokens read as "0")."""
    out = {}
    for lid, res in asm.template("Inference")["Resources"].items():
        if res["Type"] == "Custom::AWSCDK-EKS-KubernetesResource":
            for d in manifest_docs(res):
                out[(d["kind"], d["metadata"]["name"])] = (lid, d)
    return out


def _serve_app(rs: dict[str, Any]) -> dict[str, Any]:
    (app,) = [a for a in yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"] if a["name"] == "minilm"]
    return app  # type: ignore[no-any-return]


# --- config ------------------------------------------------------------------------------------------------------

def _config(edit: Any) -> None:
    context = read_project_context(ROOT / "cdk.json")
    envs = json.loads(json.dumps(context[ENVIRONMENTS_KEY]))
    edit(envs["dev"])
    config_from_context({**context, ENVIRONMENTS_KEY: envs, "env": "dev"})


@pytest.mark.parametrize(("canary", "lines"), [
    ({"revision": "v1"}, ["model 'minilm' canary revision: 'v1' is the model's current revision"]),
    ({"revision": "v 2", "weights_sha256": "abc"}, ["model 'minilm' canary revision: 'v 2' is not a plain version",
                                                    "model 'minilm' canary weights_sha256: 'abc' is not a sha256"]),
    ({"weights_sha256": DIGEST}, ["model 'minilm' canary: 'revision' is missing"]),
    ({"revision": "v2", "percent": 5}, ["model 'minilm' canary"]),
])
def test_each_canary_mistake_is_a_line_of_its_own(canary: dict[str, Any], lines: list[str]) -> None:
    def edit(env: dict[str, Any]) -> None:
        env["models"][0]["canary"] = canary

    with pytest.raises(ConfigError) as e:
        _config(edit)
    assert len(e.value.errors) == len(lines), e.value.errors
    for line, err in zip(lines, e.value.errors, strict=True):
        assert err.startswith(line), err


def test_a_canary_needs_a_front_door_a_rollout_block_and_a_name_kuberay_takes() -> None:
    def no_door(env: dict[str, Any]) -> None:
        with_canary(env)
        env["front_door"]["enabled"] = False

    def no_rollout(env: dict[str, Any]) -> None:
        with_canary(env)
        del env["rollout"]

    def long_name(env: dict[str, Any]) -> None:
        with_canary(env)
        env["models"][0]["name"] = "m" * 38  # 38 + len("-inferentia-canary") = 56 > 47
        env["front_door"].pop("routes", None)

    for edit, lines in ((no_door, ["front_door.enabled is false in 'dev'"]),
                        (no_rollout, ["environment 'dev' has no rollout block"]),
                        (long_name, ["-graviton-canary' has 54 characters, over KubeRay's 47",
                                     "-inferentia-canary' has 56 characters, over KubeRay's 47"])):
        with pytest.raises(ConfigError) as e:
            _config(edit)
        errors = [x for x in e.value.errors if "canary" in x]
        assert len(errors) == len(lines), e.value.errors
        for line, err in zip(lines, errors, strict=True):
            assert line in err, err


# --- synth -------------------------------------------------------------------------------------------------------

def test_synth_renders_each_targets_canary_valid_against_the_kuberay_crd(canary_assembly: Assembly) -> None:
    """GIVEN dev with minilm's canary at v2 WHEN synthesized THEN each target has ``<target>-canary``, a manifest
    resource of its own (dropping ``canary`` deletes it), serving v2 with the pinned digest, one worker to start,
    the target's serving shape and labels (its NetworkPolicies admit the canary's pods), valid against KubeRay's CRD;
    the current RayServices are untouched."""
    objs = objects(canary_assembly)
    validator = crd_validator("ray.io_rayservices.yaml")
    assert validator is not None
    for t in TARGETS:
        stable_lid, stable = objs[("RayService", t)]
        lid, canary = objs[("RayService", f"{t}-canary")]
        assert lid != stable_lid and [k for k, (i, _) in objs.items() if i == lid] == [("RayService", f"{t}-canary")]
        assert crd_errors(validator, canary) == []
        app = _serve_app(canary)
        assert (app["args"]["revision"], app["args"]["weights_sha256"]) == ("v2", DIGEST)
        assert app["args"]["model_uri"].endswith("/models/minilm/v2")
        assert f"{t}-canary" in app["args"]["compile_hint"]
        assert _serve_app(stable)["args"]["revision"] == "v1"
        assert canary["metadata"]["labels"]["eks-inference/service"] == t
        assert canary["metadata"]["labels"]["eks-inference/rollout"] == "canary"
        (cw,), (sw,) = (x["spec"]["rayClusterConfig"]["workerGroupSpecs"] for x in (canary, stable))
        assert (cw["replicas"], cw["minReplicas"], cw["maxReplicas"]) == (1, 1, sw["maxReplicas"])
        assert cw["template"] == sw["template"]
        assert canary["spec"]["rayClusterConfig"]["headGroupSpec"] == stable["spec"]["rayClusterConfig"][
            "headGroupSpec"]


def test_the_kube_backend_applies_what_synth_renders(canary_assembly: Assembly) -> None:
    """GIVEN the synthesized current objects, read back as the API server returns them (status, server fields and the
    last-applied annotation added) WHEN the cluster backend makes the canary from them (kubectl apply, no deploy) THEN
    the RayService and TargetGroupConfiguration equal what synth renders for the same config, so a later deploy of
    that config changes nothing of them."""
    objs = objects(canary_assembly)
    server = {"resourceVersion": "42", "uid": "u-1", "generation": 3, "creationTimestamp": "2026-12-07T00:00:00Z"}

    def read_back(obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return {**obj, "status": {"conditions": []}, "metadata": {**meta, **server, "annotations": {
            **meta.get("annotations", {}), "kubectl.kubernetes.io/last-applied-configuration": "{}"}}}

    def unpruned(obj: dict[str, Any]) -> dict[str, Any]:
        """Without the prune label the deploy gives each manifest resource's objects (the canary's its own)."""
        labels = {k: v for k, v in obj["metadata"]["labels"].items() if not k.startswith(CDK_PRUNE_LABEL)}
        return {**obj, "metadata": {**obj["metadata"], "labels": labels}}

    for t in TARGETS:
        made = canary_ray_service(read_back(objs[("RayService", t)][1]), model="minilm", revision="v2",
                                  weights_sha256=DIGEST)
        rendered = unpruned(objs[("RayService", f"{t}-canary")][1])
        for d in (made, rendered):
            d["spec"] = {**d["spec"], "serveConfigV2": yaml.safe_load(d["spec"]["serveConfigV2"])}
        assert made == rendered
        group = canary_target_group(read_back(objs[("TargetGroupConfiguration", f"{t}-serve")][1]))
        assert group == unpruned(objs[("TargetGroupConfiguration", f"{t}-canary-serve")][1])


def test_synth_renders_the_canarys_target_groups_compile_jobs_and_route_valid_against_the_upstream_crds(
        canary_assembly: Assembly) -> None:
    """The canary's TargetGroupConfigurations (Gateway API and load balancer controller CRDs), its compile Jobs (the
    core Job schema; replicas never compile) and the model's route: ``rollout.canary_percent`` (dev: 10 %) on the
    canaries, each processor keeping its configured share on both sides, weights within the controller's 999, and the
    configured weights in the annotation later stages are computed from."""
    objs = objects(canary_assembly)
    tgc = crd_validator("gateway.k8s.aws_targetgroupconfigurations.yaml", directory=LBC_CRDS)
    routes = crd_validator("gateway.networking.k8s.io_httproutes.yaml", directory=GATEWAY_API_CRDS)
    assert tgc is not None and routes is not None
    jobs = {d["spec"]["template"]["metadata"]["labels"]["eks-inference/compile-target"]: d
            for (kind, _), (_, d) in objs.items() if kind == "Job" and "eks-inference/compile-target" in
            d["spec"]["template"]["metadata"]["labels"]}
    for t in TARGETS:
        group = objs[("TargetGroupConfiguration", f"{t}-canary-serve")][1]
        assert group["spec"]["targetReference"]["name"] == f"{t}-canary-serve-svc"
        assert crd_errors(tgc, group) == []
        job = jobs[f"{t}-canary"]
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        app = json.loads(args[args.index("--serve-app") + 1])
        assert (app["args"]["revision"], app["args"]["weights_sha256"]) == ("v2", DIGEST)
        validate_core(job)
        # the cluster backend's copy of the target's Job compiles the same application
        copied = canary_compile_job(jobs[t], model="minilm", revision="v2", weights_sha256=DIGEST)
        c_args = copied["spec"]["template"]["spec"]["containers"][0]["args"]
        assert json.loads(c_args[c_args.index("--serve-app") + 1])["args"] == app["args"]
    route = objs[("HTTPRoute", "minilm")][1]
    assert crd_errors(routes, route) == []
    refs = {r["name"]: r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]}
    assert set(refs) == {f"{t}{s}-serve-svc" for t in TARGETS for s in ("", "-canary")}
    assert max(refs.values()) <= MAX_WEIGHT
    assert canary_share(route) == pytest.approx(10.0, abs=0.2)
    for t in TARGETS:  # graviton 80 : inferentia 20 on either side
        assert refs[f"{t}-serve-svc"] / refs[f"{t}-canary-serve-svc"] == pytest.approx(9.0)
    assert refs["minilm-graviton-serve-svc"] / refs["minilm-inferentia-serve-svc"] == pytest.approx(4.0)
    assert json.loads(route["metadata"]["annotations"][WEIGHTS_ANNOTATION]) == {
        "0": {"minilm-graviton": 80, "minilm-inferentia": 20}}


def test_checkov_finds_nothing_in_the_canarys_objects_or_the_template(tmp_path: Path,
                                                                     canary_assembly: Assembly) -> None:
    """The canary's Kubernetes objects as the charts render them for dev with a canary (images and bucket at fixed
    names, as tests/unit/test_checkov.py renders dev and prod) and the synthesized Inference template that holds them:
    no failed check."""
    envs = copy.deepcopy(cdk_context()[ENVIRONMENTS_KEY])
    with_canary(envs["dev"])
    cfg = load_config("dev", envs)
    kw: dict[str, Any] = {"images": IMAGES, "repository_uri": REPOSITORY, "region": cfg.region,
                          "gcs_store": gcs_store(cfg)}
    targets, canaries = plan_targets(cfg, **kw), plan_canaries(cfg, **kw)
    app = cdk8s.App()
    serving = ServingChart(app, "serving", targets=targets, api_server_cidrs=[cfg.vpc_cidr], canaries=canaries)
    door = FrontDoorChart(app, "front-door", door=cfg.front_door, targets=targets, subnet_ids=["subnet-0aaa"],
                          canaries=canaries, canary_percent=cfg.rollout.canary_percent)
    docs = [*serving.manifests(), *door.manifests(), *(compile_job(c, region=cfg.region) for c in canaries)]
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "RayService"} == {
        *TARGETS, *(f"{t}-canary" for t in TARGETS)}
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "canary.yaml").write_text(yaml.safe_dump_all(docs))
    run_checkov(tmp_path / "k8s", "kubernetes", KUBERNETES_SKIPS)
    (tmp_path / "cfn").mkdir()
    (tmp_path / "cfn" / "inference.json").write_text(json.dumps(canary_assembly.template("Inference")))
    run_checkov(tmp_path / "cfn", "cloudformation", CLOUDFORMATION_SKIPS)


def test_dev_and_prod_without_a_canary_render_none(assemblies: dict[str, Assembly]) -> None:
    for env_name in ("dev", "prod"):
        objs = objects(assemblies[env_name])
        assert not [k for k in objs if "canary" in k[1]], env_name
        route = objs[("HTTPRoute", "minilm")][1]
        assert "annotations" not in route["metadata"] and canary_share(route) == 0


# --- the rollout command keeps cdk.json in step -------------------------------------------------------------------

def test_rollout_writes_the_canary_then_the_promotion_or_the_rollback_into_cdk_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``start`` writes the model's canary; a promotion makes its revision and digest the model's and drops the
    canary; a rollback drops it; each prints the change, and what it writes passes config validation."""
    shutil.copy(ROOT / "cdk.json", tmp_path / "cdk.json")
    shutil.copy(ROOT / "cdk.context.json", tmp_path / "cdk.context.json")
    a = argparse.Namespace(env="dev", model="minilm", app_dir=tmp_path)
    state = RolloutState(env="dev", model="minilm", revision="v2", from_revision="v1", weights_sha256=DIGEST,
                         canary_percent=10, bake_s=0, alerts=[], ready_timeout_s=60)

    def model() -> dict[str, Any]:
        envs = json.loads((tmp_path / "cdk.json").read_text())["context"][ENVIRONMENTS_KEY]
        (m,) = envs["dev"]["models"]
        return m  # type: ignore[no-any-return]

    before = model()
    write_config(a, state, "start")
    assert model() == {**before, "canary": CANARY}
    out = capsys.readouterr().out
    assert "environment 'dev', model 'minilm'" in out and f'canary: (absent) → {json.dumps(CANARY)}' in out
    write_config(a, state, "start")  # a resumed start changes nothing
    assert capsys.readouterr().out == ""
    write_config(a, state, "rolled-back")
    assert model() == before and f"canary: {json.dumps(CANARY)} → (absent)" in capsys.readouterr().out
    write_config(a, state, "start")
    capsys.readouterr()
    write_config(a, state, "promoted")
    assert model() == {**before, "revision": "v2", "weights_sha256": DIGEST}
    out = capsys.readouterr().out
    assert 'revision: "v1" → "v2"' in out and f"canary: {json.dumps(CANARY)} → (absent)" in out
    assert cdk_context()[ENVIRONMENTS_KEY]["dev"]["models"][0].get("canary") is None  # the project's file untouched

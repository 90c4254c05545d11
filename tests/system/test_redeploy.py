"""A second ``cdk deploy`` over the first, as the cluster receives it (model: tests/system/kubectl_apply.py).

``redeploy``: dev with load-test run ``run-002`` synthesized twice, before and after a change to the load
tester's code (a new image tag) and to the serve config (tests/system/variants.py).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from eks_inference.config import load_environment
from tests.conftest import ROOT, Assembly
from tests.system.kubectl_apply import IMMUTABLE, ApplyError, Cluster, deploy, key
from tests.system.synthesized import manifests, objects


def template(asm: Assembly) -> dict[str, Any]:
    return asm.template("-Inference")


def jobs(asm: Assembly) -> dict[str, dict[str, Any]]:
    return {j["metadata"]["labels"]["eks-inference/target"]: j for j in objects(asm, "Job")
            if j["metadata"]["labels"].get("eks-inference/role") == "loadtest"}


def test_the_pair_differs_where_a_commit_would(redeploy: dict[str, Assembly]) -> None:
    """The fixture is what it claims: a new load-test image tag and a new serve config, same run id."""
    before, after = jobs(redeploy["before"]), jobs(redeploy["after"])
    image = [j["spec"]["template"]["spec"]["containers"][0]["image"] for j in (before["report"], after["report"])]
    assert image[0] != image[1] and image[0].rsplit(":", 1)[0] == image[1].rsplit(":", 1)[0]
    assert {j["metadata"]["labels"]["eks-inference/run-id"] for j in [*before.values(), *after.values()]} == {
        "run-002"}
    serve = [yaml.safe_load(rs["spec"]["serveConfigV2"]) for asm in (redeploy["before"], redeploy["after"])
             for rs in objects(asm, "RayService") if rs["metadata"]["name"] == "minilm-graviton"]
    assert serve[0] != serve[1]


def test_first_deploy_creates_every_object_once(redeploy: dict[str, Assembly]) -> None:
    cluster = Cluster()
    log = deploy(cluster, None, template(redeploy["before"]))
    assert all(line.startswith("create ") for line in log)
    assert len(cluster.objects) == sum(len(v) for v in manifests(redeploy["before"]).values())


def test_second_deploy_applies_over_the_first(redeploy: dict[str, Assembly]) -> None:
    """No immutable field changes (a changed Job spec is a new Job name), the old run's Jobs are pruned, and the
    cluster then holds exactly what the new manifests say: nothing left behind."""
    cluster = Cluster()
    deploy(cluster, None, template(redeploy["before"]))
    old_jobs = {j["metadata"]["name"] for j in objects(redeploy["before"], "Job")}
    log = deploy(cluster, template(redeploy["before"]), template(redeploy["after"]))
    assert any(line.startswith("update ") for line in log)
    expected = {key(o) for o in objects(redeploy["after"])}
    assert set(cluster.objects) == expected
    assert not old_jobs & {k[3] for k in cluster.objects}


def test_job_names_that_ignore_the_spec_would_roll_the_stack_back(redeploy: dict[str, Assembly]) -> None:
    """Negative control of the model: with Job names from the run id alone (as before), apply hits the
    immutable pod template and the deploy fails."""
    before, after = copy.deepcopy(template(redeploy["before"])), copy.deepcopy(template(redeploy["after"]))
    for t in (before, after):
        for res in t["Resources"].values():
            if res["Type"] == "Custom::AWSCDK-EKS-KubernetesResource":
                text = json.dumps(res["Properties"]["Manifest"])
                for j in objects(redeploy["before"], "Job") + objects(redeploy["after"], "Job"):
                    text = text.replace(j["metadata"]["name"], j["metadata"]["name"].rsplit("-", 1)[0])
                res["Properties"]["Manifest"] = json.loads(text)
    cluster = Cluster()
    deploy(cluster, None, before)
    with pytest.raises(ApplyError, match=r"spec.template: field is immutable"):
        deploy(cluster, before, after)


def test_dropping_a_model_removes_its_objects(redeploy: dict[str, Assembly]) -> None:
    """Each target is its own manifest resource: CloudFormation deletes it, the handler runs kubectl delete.
    (In one shared manifest, apply --prune would keep the RayService: its kind is not on kubectl's allowlist.)"""
    before = template(redeploy["before"])
    after = copy.deepcopy(before)
    (rid,) = [r for r, objs in manifests(redeploy["before"]).items()
              if any(o["kind"] == "RayService" and o["metadata"]["name"] == "minilm-inferentia" for o in objs)]
    # The front door keeps each target's TargetGroupConfiguration in a resource of its own, which goes with it.
    rids = [rid, *(r for r, objs in manifests(redeploy["before"]).items() if any(
        o["kind"] == "TargetGroupConfiguration" and o["metadata"]["name"] == "minilm-inferentia-serve" for o in objs))]
    assert len(rids) == 2
    for r in rids:
        del after["Resources"][r]
    cluster = Cluster()
    deploy(cluster, None, before)
    deploy(cluster, before, after)
    assert not [k for k in cluster.objects if k[1] != "Job" and k[3].startswith("minilm-inferentia")]


def test_runs_are_deliberate_and_never_overwrite(redeploy: dict[str, Assembly],
                                                 assemblies: dict[str, Assembly]) -> None:
    """No Job outlives its manifest through a TTL (a TTL-deleted Job would be re-created by the next apply of
    an unchanged manifest); re-created clients leave existing results alone; dev and prod run nothing until
    asked."""
    for j in objects(redeploy["after"], "Job"):
        assert "ttlSecondsAfterFinished" not in j["spec"]
        args = j["spec"]["template"]["spec"]["containers"][0]["args"]
        if args[1] == "run":
            assert "--skip-if-exists" in args
    for env, asm in assemblies.items():  # no load test: the compile Jobs, and where GCS FT is on, its token sync
        roles = {j["metadata"]["labels"]["eks-inference/role"] for j in objects(asm, "Job")}
        ft = load_environment(env, cdk_json=ROOT / "cdk.json").ray.gcs_fault_tolerance
        assert roles == ({"compile", "gcs-token-sync"} if ft else {"compile"})


def test_every_kind_we_ship_has_its_update_rules_modelled(redeploy: dict[str, Assembly]) -> None:
    for o in objects(redeploy["after"]):
        assert (o["apiVersion"].split("/")[0] if "/" in o["apiVersion"] else "", o["kind"]) in IMMUTABLE


def crd_immutable_paths(crd: dict[str, Any]) -> set[str]:
    """Paths of the fields a CRD's schema marks ``self == oldSelf`` (x-kubernetes-validations)."""
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    found: set[str] = set()

    def walk(schema: dict[str, Any], path: str) -> None:
        if any(r.get("rule", "").replace(" ", "") == "self==oldSelf" for r in schema.get(
                "x-kubernetes-validations", [])):
            found.add(path)
        for name, sub in schema.get("properties", {}).items():
            walk(sub, f"{path}.{name}" if path else name)

    walk(version["schema"]["openAPIV3Schema"], "")
    return found


def test_ray_service_update_rules_are_the_crds() -> None:
    """KubeRay v1.7.0's RayService CRD (ray.io_rayservices.yaml) marks its immutable fields with CEL rules;
    the model's list must be exactly those, and the charts set none of them."""
    path = ROOT.parent / "shared" / "kuberay-v1.7.0" / "ray.io_rayservices.yaml"
    if not path.is_file():
        pytest.skip("../shared/kuberay-v1.7.0/ray.io_rayservices.yaml is absent")
    paths = crd_immutable_paths(yaml.safe_load(path.read_text()))
    assert paths == set(IMMUTABLE[("ray.io", "RayService")])
    assert {"spec.managedBy", "spec.rayClusterConfig.gcsFaultToleranceOptions.backend"} <= paths

"""The diff engine on the synthesized dev templates with single edits made to their JSON.

Each edit stands for a change a config or construct edit produces; the assertions are the effects the
upstream systems give it (cited in :mod:`eks_inference.ops.effects`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from eks_inference.ops.diff import AssemblyDiff, diff_templates, render_markdown, render_text
from eks_inference.ops.effects import (
    SERVE_APP_CODE_VERSION,
    SERVE_REPLICAS_KEPT,
    SERVE_REPLICAS_RESTART,
    kuberay_hashed_view,
)
from eks_inference.ops.intrinsics import render, token
from eks_inference.ops.tree import MISSING, Key, diff, render_path
from tests.conftest import Assembly

Template = dict[str, Any]


def edited(assemblies: dict[str, Assembly] | Assembly, suffix: str, edit: Callable[[Template], None]) -> AssemblyDiff:
    """dev's stack (or the stack of the assembly given) against a copy with ``edit`` applied."""
    asm = assemblies if isinstance(assemblies, Assembly) else assemblies["dev"]
    old = asm.template(suffix)
    new = copy.deepcopy(old)
    edit(new)
    name = f"EksInference-dev-{suffix}"
    return diff_templates({name: old}, {name: new})


def resource(template: Template, rtype: str, contains: str = "") -> dict[str, Any]:
    (res,) = [r for lid, r in template["Resources"].items() if r["Type"] == rtype and contains in lid]
    return res


def kinds(d: AssemblyDiff) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in d.stacks:
        for r in s.resources:
            if r.effects:
                out[r.logical_id] = [e.kind for e in r.effects]
            for o in r.objects:
                out[o.label] = [e.kind for e in o.effects]
    return out


def _parts(manifest: Any) -> list[Any]:
    """A ``Manifest`` property as ``Fn::Join`` parts (a manifest without deploy-time tokens is a plain string)."""
    return list(manifest["Fn::Join"][1]) if isinstance(manifest, dict) else [manifest]


def manifest_docs(res: dict[str, Any]) -> list[dict[str, Any]]:
    parts = _parts(res["Properties"]["Manifest"])
    return list(json.loads("".join(p if isinstance(p, str) else "0" for p in parts)))


LOADTEST_NAMESPACE = "eks-inference-loadtest"


def manifest_holding(template: Template, kind: str, name: str) -> tuple[str, dict[str, Any]]:
    """(logical id, resource) of the manifest whose objects include ``kind`` named ``name`` (or ``name-<hash>``)."""
    (found,) = [(lid, r) for lid, r in template["Resources"].items()
                if r["Type"] == "Custom::AWSCDK-EKS-KubernetesResource"
                and any(d["kind"] == kind and d["metadata"]["name"].startswith(name) for d in manifest_docs(r))]
    return found


def edit_manifest(template: Template, edit: Callable[[list[dict[str, Any]]], None], *, holding: str,
                  kind: str = "RayService") -> None:
    """Edit the objects of the manifest that holds ``kind`` ``holding``, keeping the ``Fn::Join`` tokens where
    they are."""
    _, res = manifest_holding(template, kind, holding)
    parts = _parts(res["Properties"]["Manifest"])
    marks = {f"@@{i}@@": p for i, p in enumerate(parts) if not isinstance(p, str)}
    text = "".join(p if isinstance(p, str) else f"@@{i}@@" for i, p in enumerate(parts))
    docs = json.loads(text)
    edit(docs)
    text = json.dumps(docs, separators=(",", ":"))
    out: list[Any] = []
    for chunk in text.split("@@"):
        out.append(marks.get(f"@@{chunk}@@", chunk) if chunk.isdigit() and f"@@{chunk}@@" in marks else chunk)
    res["Properties"]["Manifest"] = {"Fn::Join": ["", out]} if marks else "".join(out)


def ray_service(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (rs,) = [d for d in docs if d["kind"] == "RayService" and d["metadata"]["name"] == name]
    return rs


# -- building blocks ---------------------------------------------------------------------------------------

def test_intrinsics_render_as_placeholders() -> None:
    assert token({"Ref": "Bucket"}) == "${Bucket}"
    assert token({"Fn::GetAtt": ["Role", "Arn"]}) == "${Role.Arn}"
    assert token({"Fn::Join": ["", ["s3://", {"Ref": "Bucket"}, "/models"]]}) == "s3://${Bucket}/models"
    assert token({"Fn::Sub": "${AWS::AccountId}.dkr.ecr"}) == "${AWS::AccountId}.dkr.ecr"
    assert token({"Fn::GetStackOutput": {"StackName": "S", "OutputName": "O", "Region": "r"}}) == "${S.Outputs.O}"
    assert render({"a": [{"Ref": "X"}, 1]}) == {"a": ["${X}", 1]}


def test_named_list_entries_match_by_name() -> None:
    old = {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}
    new = {"containers": [{"name": "c", "image": "3"}, {"name": "a", "image": "1"}, {"name": "b", "image": "9"}]}
    changes = {(render_path(c.path), c.old if c.old is not MISSING else None) for c in diff(old, new)}
    assert changes == {("containers[b].image", "2"), ("containers[c]", None)}
    labels = render_path(("metadata", "labels", "eks-inference/processor"))
    assert labels == 'metadata.labels["eks-inference/processor"]'
    assert render_path(("spec", Key("graviton"), 0)) == "spec[graviton][0]"


# -- CloudFormation resources -------------------------------------------------------------------------------

def test_node_group_scaling_is_in_place_and_keeps_nodes(assemblies: dict[str, Assembly]) -> None:
    d = edited(assemblies, "Cluster", lambda t: resource(t, "AWS::EKS::Nodegroup", "Inferentia")["Properties"]
               ["ScalingConfig"].update(MaxSize=3))
    (ng,) = [r for s in d.stacks for r in s.resources]
    assert [c.text_path for c in ng.changes] == ["Properties.ScalingConfig.MaxSize"]
    assert [(e.kind, "nodes kept" in e.text) for e in ng.effects] == [("update", True)]


def test_a_bounds_change_says_the_group_keeps_its_running_count(assemblies: dict[str, Assembly]) -> None:
    """GIVEN max_size raised, as the app renders it (the group's bounds and its NodeCount's) WHEN diffed THEN the
    NodeCount line says the group keeps the count it runs, and the group's line that its nodes are kept."""
    from eks_inference.constructs.node_count import RESOURCE_TYPE
    from eks_inference.ops.effects import NODE_COUNT

    def raise_max(t: Template) -> None:
        resource(t, "AWS::EKS::Nodegroup", "Inferentia")["Properties"]["ScalingConfig"]["MaxSize"] = 9
        resource(t, NODE_COUNT, "Inferentia")["Properties"]["MaxSize"] = 9

    assert NODE_COUNT == RESOURCE_TYPE
    d = edited(assemblies, "Cluster", raise_max)
    texts = {r.type: [e.text for e in r.effects] for s in d.stacks for r in s.resources}
    assert set(texts) == {"AWS::EKS::Nodegroup", NODE_COUNT}
    assert "the count it runs, kept" in texts[NODE_COUNT][0]
    assert "nodes kept" in texts["AWS::EKS::Nodegroup"][0]


def test_launch_template_change_rolls_the_nodes_of_its_group(assemblies: dict[str, Assembly]) -> None:
    def bigger_disk(t: Template) -> None:
        lt = resource(t, "AWS::EC2::LaunchTemplate", "GravitonNodeGroup")
        lt["Properties"]["LaunchTemplateData"]["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] = 200

    d = edited(assemblies, "Cluster", bigger_disk)
    k = kinds(d)
    (lt,) = [v for lid, v in k.items() if "LaunchTemplate" in lid]
    (ng,) = [v for lid, v in k.items() if "Nodegroup" in lid]
    assert lt == ["update"] and ng == ["node-rolling"]
    assert "replaces the nodes one by one" in render_text(d)


def test_replacement_cascades_through_create_only_references(assemblies: dict[str, Assembly]) -> None:
    """A new RoleName replaces the node role; NodeRole is create-only on AWS::EKS::Nodegroup, so every group
    that uses the role (dev's three and the load-test clients') is replaced as well, although its own properties did
    not change."""
    def rename_role(t: Template) -> None:
        role = next(r for lid, r in t["Resources"].items() if lid.startswith("InferenceClusterNodeRole")
                and r["Type"] == "AWS::IAM::Role")
        role["Properties"]["RoleName"] = "eks-inference-nodes"

    d = edited(assemblies, "Cluster", rename_role)
    k = kinds(d)
    groups = {lid: v for lid, v in k.items() if "Nodegroup" in lid}
    assert len(groups) == 4 and all(v == ["replace"] for v in groups.values())
    assert [v for lid, v in k.items() if lid.startswith("InferenceClusterNodeRole")] == [["replace"]]
    assert "refers to InferenceClusterNodeRole" in render_text(d)


def test_helm_values_are_compared_field_by_field(assemblies: dict[str, Assembly]) -> None:
    def more_memory(t: Template) -> None:
        chart = resource(t, "Custom::AWSCDK-EKS-HelmChart", "KubeRay")
        values = json.loads(chart["Properties"]["Values"])
        values["resources"]["limits"]["memory"] = "1Gi"
        chart["Properties"]["Values"] = json.dumps(values)

    d = edited(assemblies, "Cluster", more_memory)
    (chart,) = [r for s in d.stacks for r in s.resources]
    assert [(c.text_path, c.old, c.new) for c in chart.changes] == [
        ("Properties.Values.resources.limits.memory", "512Mi", "1Gi")]
    assert [e.kind for e in chart.effects] == ["helm-upgrade"]


def test_metadata_only_edits_are_no_change(assemblies: dict[str, Assembly]) -> None:
    def touch(t: Template) -> None:
        for r in t["Resources"].values():
            r.setdefault("Metadata", {})["aws:cdk:path"] = "moved/elsewhere"

    assert not edited(assemblies, "Cluster", touch).changed


# -- RayService: KubeRay v1.7.0 ------------------------------------------------------------------------------

def test_kuberay_hash_leaves_out_replicas_tolerations_and_gates() -> None:
    """Reproduces ``GenerateHashWithoutReplicasAndWorkersToDelete`` (ray-operator/controllers/ray/utils/util.go,
    KubeRay v1.7.0) and ``rayClusterSpecForHashing`` (rayservice_controller.go): these fields never make a
    new cluster; everything else in the spec does."""
    spec = {"rayVersion": "2.60.0", "suspend": False, "upgradeStrategy": {"type": "Recreate"},
            "headGroupSpec": {"template": {"spec": {"tolerations": [1], "schedulingGates": [2], "containers": [3]}}},
            "workerGroupSpecs": [{"groupName": "g", "replicas": 1, "minReplicas": 1, "maxReplicas": 4,
                                  "scaleStrategy": {"workersToDelete": ["p"]},
                                  "template": {"spec": {"tolerations": [1], "schedulingGates": [2],
                                                        "containers": [4]}}}]}
    assert kuberay_hashed_view(spec) == {
        "rayVersion": "2.60.0", "headGroupSpec": {"template": {"spec": {"containers": [3]}}},
        "workerGroupSpecs": [{"groupName": "g", "scaleStrategy": {}, "template": {"spec": {"containers": [4]}}}]}


def test_ray_service_cluster_changes(assemblies: dict[str, Assembly]) -> None:
    def toleration_only(docs: list[dict[str, Any]]) -> None:
        group = ray_service(docs, "minilm-inferentia")["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
        group["template"]["spec"]["tolerations"].append({"key": "x", "operator": "Exists", "effect": "NoSchedule"})

    def appended_group(docs: list[dict[str, Any]]) -> None:
        groups = ray_service(docs, "minilm-graviton")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        groups.append({**copy.deepcopy(groups[0]), "groupName": "graviton-extra"})

    def new_head_resources(docs: list[dict[str, Any]]) -> None:
        head = ray_service(docs, "minilm-graviton")["spec"]["rayClusterConfig"]["headGroupSpec"]
        head["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "4Gi"

    def none_strategy(docs: list[dict[str, Any]]) -> None:
        new_head_resources(docs)
        ray_service(docs, "minilm-graviton")["spec"]["upgradeStrategy"] = {"type": "None"}

    cases = {toleration_only: ("minilm-inferentia", "ray-not-applied"),
             appended_group: ("minilm-graviton", "ray-in-place"),
             new_head_resources: ("minilm-graviton", "new-ray-cluster"),
             none_strategy: ("minilm-graviton", "ray-not-applied")}
    for edit, (service, expected) in cases.items():
        d = edited(assemblies, "Inference",
                   lambda t, e=edit, s=service: edit_manifest(t, e, holding=s))  # type: ignore[misc]
        k = {label: v for label, v in kinds(d).items() if label.startswith("RayService")}
        assert k == {f"RayService eks-inference/{service}": [expected]}, edit.__name__
    text = render_text(edited(assemblies, "Inference",
                              lambda t: edit_manifest(t, none_strategy, holding="minilm-graviton")))
    assert "upgradeStrategy None keeps the running RayCluster" in text


def test_removed_target_deletes_its_objects(assemblies: dict[str, Assembly]) -> None:
    """Each model × processor is a manifest resource of its own: dropping one from config drops the resource,
    and the kubectl handler's delete removes its objects (kinds that kubectl's prune would leave behind)."""
    lid, _ = manifest_holding(assemblies["dev"].template("Inference"), "RayService", "minilm-inferentia")
    d = edited(assemblies, "Inference", lambda t: t["Resources"].pop(lid))
    assert kinds(d) == {
        lid: ["delete"],
        "RayService eks-inference/minilm-inferentia": ["delete"],
        "NetworkPolicy eks-inference/minilm-inferentia-ingress": ["delete"],
        "NetworkPolicy eks-inference/minilm-inferentia-head": ["delete"],
        "PodDisruptionBudget eks-inference/minilm-inferentia-workers": ["delete"]}
    assert "deleted with its manifest resource (kubectl delete)" in render_text(d)


def test_prune_deletes_only_the_kinds_on_kubectls_allowlist(run_assembly: Assembly) -> None:
    """kubectl apply --prune, as the handler runs it (no --prune-allowlist), deletes a Job dropped from a manifest
    but leaves a NetworkPolicy or a RayService running (kubectl's default prune allowlist has neither)."""
    policies: list[str] = []

    def drop_report(docs: list[dict[str, Any]]) -> None:
        docs[:] = [d for d in docs if not d["metadata"]["name"].startswith("loadtest-run-001-report-")]

    def drop_policies(docs: list[dict[str, Any]]) -> None:
        policies.extend(f"NetworkPolicy {d['metadata']['namespace']}/{d['metadata']['name']}" for d in docs
                        if d["kind"] == "NetworkPolicy")
        docs[:] = [d for d in docs if d["kind"] != "NetworkPolicy"]

    def edit(t: Template) -> None:
        edit_manifest(t, drop_report, holding="loadtest-run-001-report", kind="Job")
        edit_manifest(t, drop_policies, holding=LOADTEST_NAMESPACE, kind="Namespace")

    k = kinds(edited(run_assembly, "Inference", edit))
    (report,) = [label for label in k if label.startswith(f"Job {LOADTEST_NAMESPACE}/loadtest-run-001-report-")]
    assert policies, "the load-test namespace's manifest holds its NetworkPolicies"
    assert {label: v for label, v in k.items() if label.startswith(("Job", "NetworkPolicy"))} == {
        report: ["delete"], **{p: ["orphan"] for p in policies}}
    d = edited(run_assembly, "Inference", lambda t: edit_manifest(
        t, lambda docs: docs.remove(ray_service(docs, "minilm-graviton")), holding="minilm-graviton"))
    assert kinds(d)["RayService eks-inference/minilm-graviton"] == ["orphan"]
    assert "which has no RayService (ray.io); delete it by hand" in render_text(d)
    assert d.effects() and "1 object left in the cluster" in render_text(d).splitlines()[-1]


def test_new_run_id_prunes_the_old_jobs_and_runs_new_ones(run_assembly: Assembly) -> None:
    def rename(docs: list[dict[str, Any]]) -> None:
        for doc in docs:
            doc["metadata"]["name"] = doc["metadata"]["name"].replace("run-001", "run-002")

    d = edited(run_assembly, "Inference",
               lambda t: edit_manifest(t, rename, holding="loadtest-run-001-report", kind="Job"))
    k = kinds(d)
    jobs = {label: v for label, v in k.items() if label.startswith("Job ")}
    assert {label for label, v in jobs.items() if v == ["delete"]} == {
        label for label in jobs if "run-001" in label} and len(jobs) == 6
    assert {label for label, v in jobs.items() if v == ["job-run"]} == {label for label in jobs if "run-002" in label}


def test_objects_moving_to_their_own_manifest_are_applied_in_place(assemblies: dict[str, Assembly]) -> None:
    """From one shared serving manifest (the earlier layout) to a manifest per target: CloudFormation updates
    the shared manifest (kubectl apply --prune leaves RayServices, NetworkPolicies and PDBs alone) and creates the
    target manifests with Overwrite (kubectl apply over the running objects). No Ray cluster is re-created."""
    def one_shared_manifest(t: Template) -> None:
        res = t["Resources"]
        _, shared = manifest_holding(t, "Namespace", "eks-inference")
        label = shared["Properties"]["PruneLabel"]
        parts = _parts(shared["Properties"]["Manifest"])
        for service in ("minilm-graviton", "minilm-inferentia"):
            lid, _ = manifest_holding(t, "RayService", service)
            own = res.pop(lid)["Properties"]
            more = [p.replace(own["PruneLabel"], label) if isinstance(p, str) else p for p in _parts(own["Manifest"])]
            parts[-1] = parts[-1][:-1] + "," + more[0][1:]
            parts += more[1:]
        shared["Properties"]["Manifest"] = {"Fn::Join": ["", parts]}

    new = assemblies["dev"].template("Inference")
    old = copy.deepcopy(new)
    one_shared_manifest(old)
    d = diff_templates({"S": old}, {"S": new})
    objects = [(r.logical_id, o.label, o.action, [e.kind for e in o.effects]) for s in d.stacks
               for r in s.resources for o in r.objects]
    moved = {label for _, label, action, _ in objects if action == "modify"}
    assert moved == {f"{kind} eks-inference/minilm-{p}{suffix}" for p in ("graviton", "inferentia")
                     for kind, suffix in (("RayService", ""), ("NetworkPolicy", "-ingress"),
                                          ("NetworkPolicy", "-head"), ("PodDisruptionBudget", "-workers"))}
    assert all(kinds_ == ["moved"] for _, _, _, kinds_ in objects), objects
    assert not [o for s in d.stacks for r in s.resources for o in r.objects if o.changes]
    assert "new Ray cluster" not in render_text(d) and "moved here from ClusterServingChart" in render_text(d)

    # Renaming a target's construct: the new manifest applies over the objects, then deleting the old resource
    # deletes them (kubectl delete in CloudFormation's cleanup phase).
    renamed = copy.deepcopy(new)
    lid, _ = manifest_holding(renamed, "RayService", "minilm-graviton")
    renamed["Resources"]["Renamed" + lid] = renamed["Resources"].pop(lid)
    d = diff_templates({"S": new}, {"S": renamed})
    effects = {(r.logical_id, o.label): [e.kind for e in o.effects] for s in d.stacks for r in s.resources
               for o in r.objects}
    assert effects[(lid, "RayService eks-inference/minilm-graviton")] == ["delete"]
    assert effects[("Renamed" + lid, "RayService eks-inference/minilm-graviton")] == ["moved", "delete"]
    assert "removes the object this manifest applied" in render_text(d)


# -- Serve: Ray 2.60 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "value", "kind", "phrase"), [
    (("deployments", 0, "autoscaling_config", "max_replicas"), 5, "serve-update",
     "replicas kept (autoscaling_config changed)"),
    (("deployments", 0, "user_config", "batch_wait_timeout_s"), 0.02, "serve-update", "reconfigure()"),
    (("deployments", 0, "ray_actor_options", "num_cpus"), 2, "serve-restart", "replicas restart"),
    (("args", "max_inputs"), 8, "serve-restart", "rebuilt"),
    (("http_options",), {"host": "0.0.0.0", "port": 9000}, "serve-update", "cluster-scoped"),
])
def test_serve_config_changes(assemblies: dict[str, Assembly], path: tuple[Any, ...], value: Any, kind: str,
                              phrase: str) -> None:
    import yaml

    def edit(docs: list[dict[str, Any]]) -> None:
        rs = ray_service(docs, "minilm-graviton")
        cfg = yaml.safe_load(rs["spec"]["serveConfigV2"])
        node = cfg if path[0] == "http_options" else cfg["applications"][0]
        for seg in path[:-1]:
            node = node[seg]
        node[path[-1]] = value
        rs["spec"]["serveConfigV2"] = yaml.safe_dump(cfg, sort_keys=False)

    d = edited(assemblies, "Inference", lambda t: edit_manifest(t, edit, holding="minilm-graviton"))
    (obj,) = [o for s in d.stacks for r in s.resources for o in r.objects]
    assert [e.kind for e in obj.effects] == [kind]
    assert phrase in obj.effects[0].text
    assert "in-place Serve update" in render_markdown(d)


def test_serve_update_types_match_ray() -> None:
    """Our classes restate ``update_type`` of Ray Serve's ``DeploymentConfig`` fields
    (ray/serve/_private/config.py, Ray 2.60): LightWeight/NeedsReconfigure/NeedsActorReconfigure keep
    replicas, HeavyWeight restarts them. ``get_app_code_version`` (deploy_utils.py) hashes import_path,
    runtime_env and args."""
    config = pytest.importorskip("ray.serve._private.config")
    utils = pytest.importorskip("ray.serve._private.utils")
    kept, heavy = set(), set()
    for name, f in config.DeploymentConfig.model_fields.items():
        extra = f.json_schema_extra or {}
        kind = extra.get("update_type") if isinstance(extra, dict) else None
        if kind == utils.DeploymentOptionUpdateType.HeavyWeight:
            heavy.add(name)
        elif kind is not None:
            kept.add(name)
    assert kept == SERVE_REPLICAS_KEPT
    assert heavy <= SERVE_REPLICAS_RESTART
    import inspect

    from ray.serve._private import deploy_utils
    source = inspect.getsource(deploy_utils.get_app_code_version)
    assert all(f'"{f}"' in source for f in SERVE_APP_CODE_VERSION)


def test_legacy_asset_parameters_and_lambda_keys_are_churn() -> None:
    """A rebuilt asset under the legacy synthesizer renames its parameters and moves the Lambda S3 key."""
    def template(h: str) -> Template:
        return {"Parameters": {f"AssetParameters{h}S3Bucket1234ABCD": {"Type": "String"}},
                "Resources": {"Fn": {"Type": "AWS::Lambda::Function", "Properties": {
                    "Code": {"S3Bucket": {"Ref": f"AssetParameters{h}S3Bucket1234ABCD"}, "S3Key": f"{h}.zip"},
                    "Runtime": "python3.13"}}}}

    old, new = template("a" * 64), template("b" * 64)
    d = diff_templates({"S": old}, {"S": new})
    assert d.changed and [r.changes for s in d.stacks for r in s.resources] == [[]]
    assert len(d.churn()) == 4
    assert render_text(d).splitlines()[-2] == ("asset churn (rebuilt, 4 references not listed): "
                                               "asset bbbbbbbbbbbb aaaaaaaa→bbbbbbbb")
    new["Resources"]["Fn"]["Properties"]["Runtime"] = "python3.14"
    (fn,) = [r for s in diff_templates({"S": old}, {"S": new}).stacks for r in s.resources]
    assert [(c.text_path, c.new) for c in fn.changes] == [("Properties.Runtime", "python3.14")]

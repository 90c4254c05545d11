"""``eks-inference diff`` on pairs of real synths: the dev app, and the dev app with one thing changed.

Each pair must name exactly the changed fields (and the consequences the app itself derives from them)
and nothing else, and say what each change will do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eks_inference.cli import main
from tests.conftest import Assembly

INFERENCE = "EksInference-dev-Inference"
CLUSTER = "EksInference-dev-Cluster"


def run_diff(old: Path, new: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(["diff", str(old), str(new), "--format", fmt])
    return rc, capsys.readouterr().out


def rows(doc: dict[str, Any]) -> set[tuple[str, str, str, str, Any, Any]]:
    """(stack, resource type, object, path, old, new) for every listed change."""
    out = set()
    for s in doc["stacks"]:
        out |= {(s["name"], "", "", c["path"], json.dumps(c["old"]), json.dumps(c["new"])) for c in s["sections"]}
        for r in s["resources"]:
            out |= {(s["name"], r["type"], "", c["path"], json.dumps(c["old"]), json.dumps(c["new"]))
                    for c in r["changes"]}
            for o in r["objects"]:
                label = f"{o['kind']} {o['namespace']}/{o['name']}"
                out |= {(s["name"], r["type"], label, c["path"], json.dumps(c["old"]), json.dumps(c["new"]))
                        for c in o["changes"]}
    return out


def effects(doc: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in doc["stacks"]:
        for r in s["resources"]:
            if r["effects"]:
                out[r["logical_id"]] = [e["kind"] for e in r["effects"]]
            for o in r["objects"]:
                out[f"{o['kind']} {o['namespace']}/{o['name']}"] = [e["kind"] for e in o["effects"]]
    return out


COMPILE_JOB = "Job eks-inference/compile-"


def compile_jobs_replaced(doc: dict[str, Any], *, processors: set[str]) -> dict[str, list[str]]:
    """The effects on compile Jobs, checked to be each listed processor's Job replaced by one of a new name (a new
    shape or image is a new artifact, compiled by a new Job); the rest of the effects, returned."""
    jobs = {k: v for k, v in effects(doc).items() if k.startswith(COMPILE_JOB)}
    replaced = {k.removeprefix(COMPILE_JOB).rsplit("-", 1)[0] for k, v in jobs.items() if v == ["job-replaced"]}
    deleted = {k.removeprefix(COMPILE_JOB).rsplit("-", 1)[0] for k, v in jobs.items() if v == ["delete"]}
    assert replaced == deleted == {f"minilm-{p}" for p in processors}, jobs
    return {k: v for k, v in effects(doc).items() if not k.startswith(COMPILE_JOB)}


def test_same_assembly_is_no_change(assemblies: dict[str, Assembly], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run_diff(assemblies["dev"].path, assemblies["dev"].path, "text", capsys)
    assert (rc, out) == (0, "no changes\n")


def test_serving_field_is_an_in_place_serve_update(assemblies: dict[str, Assembly], variant_assemblies: dict[str, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """serving.max_batch_size 32 → 16: user_config in both RayServices. On Graviton that is all (its replicas' batch
    buckets stay at the live ceiling): reconfigure applies it, replicas kept. On Inferentia the compiled buckets
    follow the batch size and so do the autoscaling target (a quarter of it: 8 → 4): a recompile and a restart."""
    rc, out = run_diff(assemblies["dev"].path, variant_assemblies["batch16"], "json", capsys)
    doc = json.loads(out)
    assert rc == 1 and doc["asset_churn"] is None
    rs = "Custom::AWSCDK-EKS-KubernetesResource"
    expected = set()
    for proc in ("graviton", "inferentia"):
        obj = f"RayService eks-inference/minilm-{proc}"
        expected.add((INFERENCE, rs, obj, "spec.serveConfigV2.applications[minilm].deployments[InferenceModel]"
                                          ".user_config.max_batch_size", "32", "16"))
    inf = "RayService eks-inference/minilm-inferentia"
    expected |= {
        (INFERENCE, rs, inf, "spec.serveConfigV2.applications[minilm].args.batch_buckets",
         "[1, 2, 4, 8, 16, 32]", "[1, 2, 4, 8, 16]"),
        (INFERENCE, rs, inf, "spec.serveConfigV2.applications[minilm].deployments[InferenceModel].autoscaling_config"
                             ".target_ongoing_requests", "8.0", "4.0"),
    }
    assert {r for r in rows(doc) if not r[2].startswith(COMPILE_JOB)} == expected
    assert compile_jobs_replaced(doc, processors={"graviton", "inferentia"}) == {
        "RayService eks-inference/minilm-graviton": ["serve-update"],
        "RayService eks-inference/minilm-inferentia": ["serve-restart"]}

    rc, text = run_diff(assemblies["dev"].path, variant_assemblies["batch16"], "text", capsys)
    assert rc == 1
    assert text.count("spec.serveConfigV2.applications[minilm].deployments[InferenceModel].user_config"
                      ".max_batch_size: 32 → 16") == 2
    assert text.count("=> in-place Serve update") == 2 and "=> new Ray cluster" not in text
    assert "reconfigure() receives the new user_config" in text  # Graviton: replicas kept
    assert "(args and deployment options changed)" in text  # Inferentia: batch_buckets is an application arg


def test_node_group_instance_type_is_a_replacement(run_assembly: Assembly, variant_assemblies: dict[str, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """During load-test run run-001, graviton c7g.2xlarge → c7g.4xlarge and max_size + 2, with what the app
    derives from them: the node group's name (it carries a hash of its instance types, so that CloudFormation can
    replace it), the Cluster Autoscaler's priority pattern for that name, and the graviton client Job's
    --instance-type and --placement (what the target occupies, priced by the report), which change that Job's spec
    and so its name (a new Job replaces it). The RayService does not change: its worker bounds follow the model's
    replica bounds, not the node group."""
    rc, out = run_diff(run_assembly.path, variant_assemblies["graviton"], "json", capsys)
    doc = json.loads(out)
    assert rc == 1 and doc["asset_churn"] is None
    kinds = effects(doc)
    jobs = [k for k in kinds if k.startswith("Job ")]
    (old_job,) = [k for k in jobs if kinds[k] == ["delete"]]
    (new_job,) = [k for k in jobs if kinds[k] == ["job-replaced"]]
    assert len(jobs) == 2
    assert all(j.startswith("Job eks-inference-loadtest/loadtest-run-001-minilm-graviton-") for j in jobs)
    changes = rows(doc)
    args_changes = {c for c in changes if c[2] == new_job}
    assert all(c[3].startswith("spec.template.spec.containers[client].args[") for c in args_changes)
    (args_change,) = [c for c in args_changes if c[4] == '"c7g.2xlarge"']
    (placement_change,) = args_changes - {args_change}
    assert placement_change[4].startswith('"workers=c7g.2xlarge:') and placement_change[5].startswith(
        '"workers=c7g.4xlarge:')
    (name_change,) = [c for c in changes if c[3] == "NodegroupName" and c[1] == "AWS::EKS::Nodegroup"]
    old_name, new_name = (json.loads(v) for v in name_change[4:])
    assert old_name.startswith("graviton-") and new_name.startswith("graviton-") and old_name != new_name
    (priority_change,) = [c for c in changes if c[1] == "Custom::AWSCDK-EKS-HelmChart"]
    assert priority_change[3].startswith("Values.expanderPriorities[")
    assert (old_name in priority_change[4]) and (new_name in priority_change[5])
    (max_change,) = [c for c in changes if c[3] == "ScalingConfig.MaxSize"]
    assert int(max_change[5]) == int(max_change[4]) + 2
    # the group's NodeCount follows its bounds and name, and its function may describe the group under the new name
    count = {c for c in changes if c[1] in ("Custom::NodeCount", "AWS::IAM::Policy")}
    assert {(c[3], c[4], c[5]) for c in count if c[1] == "Custom::NodeCount"} == {
        ("MaxSize", max_change[4], max_change[5]), ("NodegroupName", name_change[4], name_change[5])}
    assert all(c[3].startswith("PolicyDocument.Statement") and old_name in c[4] and new_name in c[5]
               for c in count if c[1] == "AWS::IAM::Policy")
    assert changes - count == {
        (CLUSTER, "AWS::EKS::Nodegroup", "", "InstanceTypes[0]", '"c7g.2xlarge"', '"c7g.4xlarge"'),
        max_change, name_change, priority_change,
        (INFERENCE, "Custom::AWSCDK-EKS-KubernetesResource", new_job, args_change[3], '"c7g.2xlarge"', '"c7g.4xlarge"'),
        placement_change,
    }
    (nodegroup,) = [k for k in kinds if "GravitonNodeGroup" in k and "NodeCount" not in k]
    assert kinds[nodegroup] == ["replace"]
    assert "RayService eks-inference/minilm-graviton" not in kinds
    rc, text = run_diff(run_assembly.path, variant_assemblies["graviton"], "text", capsys)
    (replacement,) = [line for line in text.splitlines() if "REPLACEMENT:" in line]
    assert "InstanceTypes" in replacement and "NodegroupName" in replacement and "create-only" in replacement
    assert "=> new Ray cluster" not in text
    assert f"=> replaces Job {old_job.rsplit('/', 1)[1]}" in text and "(--skip-if-exists)" in text
    assert "1 Job replaced" in text.splitlines()[-1]


def test_rebuilt_image_is_churn_and_a_new_ray_cluster(assemblies: dict[str, Assembly],
                                                      variant_assemblies: dict[str, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The graviton Dockerfile's base moves: one churn line, and the graviton RayService gets a new cluster."""
    rc, out = run_diff(assemblies["dev"].path, variant_assemblies["image"], "json", capsys)
    doc = json.loads(out)
    assert rc == 1
    assert {r for r in rows(doc) if not r[2].startswith(COMPILE_JOB)} == set()
    assert compile_jobs_replaced(doc, processors={"graviton"}) == {
        "RayService eks-inference/minilm-graviton": ["new-ray-cluster"]}
    # the graviton compile Job's image is one of them
    assert doc["asset_churn"].startswith("asset churn (rebuilt, 4 references not listed): image "
                                         "eks-inference-graviton ")
    rc, text = run_diff(assemblies["dev"].path, variant_assemblies["image"], "text", capsys)
    assert [line for line in text.splitlines() if "churn" in line] == [doc["asset_churn"]]
    assert "new Ray cluster (upgradeStrategy NewCluster)" in text
    assert "dkr.ecr" not in text  # no image URI is dumped

    rc, md = run_diff(assemblies["dev"].path, variant_assemblies["image"], "markdown", capsys)
    assert md.startswith("### eks-inference diff: 1 stack changed: 1 new Ray cluster, 1 Job replaced, 1 deletion\n")
    assert "**new Ray cluster (upgradeStrategy NewCluster)" in md

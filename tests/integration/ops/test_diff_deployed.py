"""``eks-inference diff --deployed``: the deployed templates (CloudFormation GetTemplate) against a synth.

moto serves GetTemplate but cannot create these stacks (it stops at their SSM-typed BootstrapVersion
parameter and at resources it does not model), so the "stacks exist" case gets a botocore Stubber whose
GetTemplate answers carry the real dev templates (RECORDED shape; botocore validates it against the
CloudFormation service model). The "nothing deployed yet" case runs against the moto server over HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from eks_inference.ops.assembly import deployed_templates, load_assembly, stack_names
from eks_inference.ops.diff import diff_assemblies, diff_templates, to_dict
from tests.conftest import ROOT, Assembly, offline_env

EI = ROOT / ".venv" / "bin" / "eks-inference"


@pytest.mark.integration
def test_nothing_deployed_yet_creates_every_stack(moto_s3_endpoint: str, run_assembly: Assembly) -> None:
    """dev with a load-test run, into an account that has none of its stacks: every object is new."""
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_s3_endpoint}
    proc = subprocess.run([str(EI), "diff", "--deployed", "-c", "env=dev", "--assembly", str(run_assembly.path),
                           "--format", "json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert [(s["name"], s["action"]) for s in doc["stacks"]] == [(n, "create") for n in stack_names("dev")]
    inference = doc["stacks"][2]
    objects = {(o["kind"], o["name"]): [e["kind"] for e in o["effects"]] for r in inference["resources"]
               for o in r["objects"]}
    assert objects[("RayService", "minilm-graviton")] == objects[("RayService", "minilm-inferentia")] == [
        "new-ray-cluster"]
    (report,) = [name for kind, name in objects if kind == "Job" and name.startswith("loadtest-run-001-report-")]
    assert objects[("Job", report)] == ["job-run"]


def test_deployed_templates_diff_like_the_assemblies(assemblies: dict[str, Assembly],
                                                     variant_assemblies: dict[str, Path]) -> None:
    """Deployed: dev's Network and Inference stacks; Cluster not yet. Synthesized: the max_batch_size 16 variant."""
    deployed = load_assembly(assemblies["dev"].path)
    new = load_assembly(variant_assemblies["batch16"])
    cfn = boto3.client("cloudformation", region_name="us-west-2", aws_access_key_id="x", aws_secret_access_key="x")
    network, cluster, inference = stack_names("dev")
    with Stubber(cfn) as stub:
        stub.add_response("get_template", {"TemplateBody": json.dumps(deployed.templates[network]),
                                           "StagesAvailable": ["Original", "Processed"]},
                          {"StackName": network, "TemplateStage": "Original"})
        stub.add_client_error("get_template", service_error_code="ValidationError",
                              service_message=f"Stack with id {cluster} does not exist", http_status_code=400,
                              expected_params={"StackName": cluster, "TemplateStage": "Original"})
        stub.add_response("get_template", {"TemplateBody": json.dumps(deployed.templates[inference]),
                                           "StagesAvailable": ["Original", "Processed"]},
                          {"StackName": inference, "TemplateStage": "Original"})
        old = deployed_templates(stack_names("dev"), cfn)
    assert old[cluster] is None
    got = to_dict(diff_templates(old, new.templates, new.assets))
    assert [(s["name"], s["action"]) for s in got["stacks"]] == [(cluster, "create"), (inference, "modify")]
    from_dirs = to_dict(diff_assemblies(deployed, new))
    assert got["stacks"][1] == from_dirs["stacks"][0]


def test_no_credentials_is_one_line(assemblies: dict[str, Assembly]) -> None:
    env = {**offline_env(), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    proc = subprocess.run([str(EI), "diff", "--deployed", "-c", "env=dev", "--assembly", str(assemblies["dev"].path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("eks-inference diff: no AWS credentials found")

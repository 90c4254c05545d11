"""``eks-inference preflight`` against a moto server on 127.0.0.1 (the session's ``moto_s3_endpoint``).

moto models STS, SSM, CloudFormation, EC2 (its instance-type and per-zone offering data) and EKS clusters.
It cannot model Service Quotas values or EKS DescribeAddonVersions: those two calls get botocore Stubbers
whose responses have the shape of the real API (botocore validates every stubbed response and request
against the service model), each marked RECORDED below. Scenarios live in separate regions of the
shared server so they cannot see each other's state.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from eks_inference.config import ENVIRONMENTS_KEY
from eks_inference.ops import preflight as pf
from eks_inference.ops.assembly import load_assembly
from eks_inference.ops.project import availability_zones, platform_config, read_context
from tests.conftest import ROOT, Assembly, cdk_context

pytestmark = pytest.mark.integration
EI = ROOT / ".venv" / "bin" / "eks-inference"
MOTO_ACCOUNT = "123456789012"


@pytest.fixture
def moto(moto_s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3_endpoint)
    yield moto_s3_endpoint


def run_cli(args: list[str], endpoint: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The installed CLI, with only the virtual environment on PATH: no Docker (its check is tested on its own)."""
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "PATH": str(EI.parent)}
    return subprocess.run([str(EI), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def by_check(doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["check"]: c for c in doc["checks"]}


def context(env: str = "dev", **overrides: str) -> pf.Context:
    ctx = read_context(ROOT, {"env": env, **overrides})
    config = platform_config(ctx)
    return pf.Context(config=config, assembly=None, zones=availability_zones(ctx, config))


def test_unbootstrapped_account_end_to_end(moto: str, assemblies: dict[str, Assembly]) -> None:
    """dev as configured, in moto's account: not bootstrapped, no Docker on PATH; exit 1 with one row each."""
    proc = run_cli(["preflight", "--env", "dev", "-c", f"account={MOTO_ACCOUNT}", "--assembly",
                    str(assemblies["dev"].path), "--json"], moto)
    assert proc.returncode == 1, proc.stderr
    checks = by_check(json.loads(proc.stdout))
    assert checks["credentials"]["status"] == "pass"
    assert checks["cdk bootstrap"]["status"] == "fail"
    assert checks["cdk bootstrap"]["found"].startswith("not bootstrapped: no SSM parameter /cdk-bootstrap/hnb659fds/"
                                                       "version and stack CDKToolkit")
    assert checks["cdk bootstrap"]["fix"] == f"npx cdk bootstrap aws://{MOTO_ACCOUNT}/us-west-2"
    assert checks["instance offerings"]["status"] == "pass"
    assert "us-west-2a, us-west-2b, us-west-2c" in checks["instance offerings"]["found"]
    # moto answers Service Quotas and DescribeAddonVersions with errors: warnings, never a traceback.
    assert {c["status"] for name, c in checks.items() if name.startswith(("quota ", "add-on "))} == {"warn"}
    assert checks["EKS cluster name"]["status"] == "pass"
    assert checks["docker buildx"]["status"] == "fail" and "docker not found" in checks["docker buildx"]["found"]

    table = run_cli(["preflight", "--env", "dev", "-c", f"account={MOTO_ACCOUNT}", "--assembly",
                     str(assemblies["dev"].path)], moto)
    assert table.returncode == 1 and "Traceback" not in table.stdout + table.stderr
    header = table.stdout.splitlines()[0].split()
    assert header == ["CHECK", "STATUS", "FOUND", "FIX"]
    assert table.stdout.splitlines()[-1].endswith("passed")


def test_wrong_account_is_blocking(moto: str) -> None:
    proc = run_cli(["preflight", "--env", "dev", "--json"], moto)
    check = by_check(json.loads(proc.stdout))["credentials"]
    assert proc.returncode == 1 and check["status"] == "fail"
    assert check["found"].startswith(f"account {MOTO_ACCOUNT} ") and "deploys to 111122223333" in check["found"]


def test_zone_without_the_instance_type(moto: str, tmp_path: Path) -> None:
    """moto's us-east-1 data offers inf2.xlarge in us-east-1a, b, c and f, not d."""
    ctx = cdk_context()
    dev = ctx[ENVIRONMENTS_KEY]["dev"]
    # not named dev, so its plain-HTTP front door would be refused: this check is about zones, not the front door
    ctx[ENVIRONMENTS_KEY] = {"east": {**dev, "account": MOTO_ACCOUNT, "region": "us-east-1",
                                      "availability_zones": ["us-east-1a", "us-east-1b", "us-east-1d"],
                                      "front_door": {**dev["front_door"], "enabled": False}}}
    (tmp_path / "cdk.json").write_text(json.dumps({"context": ctx}))
    proc = run_cli(["preflight", "--env", "east", "--app-dir", str(tmp_path), "--json"], moto, cwd=tmp_path)
    check = by_check(json.loads(proc.stdout))["instance offerings"]
    assert proc.returncode == 1 and check["status"] == "fail"
    assert check["found"].startswith("inf2.xlarge not in us-east-1d (zones us-east-1a, us-east-1b, us-east-1d)")


def _bootstrap(region: str, version: str) -> None:
    boto3.client("ssm", region_name=region).put_parameter(Name="/cdk-bootstrap/hnb659fds/version", Value=version,
                                                          Type="String", Overwrite=True)
    template = {"Resources": {"Version": {"Type": "AWS::SSM::Parameter",
                                          "Properties": {"Type": "String", "Value": version,
                                                         "Name": f"/cdk-bootstrap/toolkit-{region}"}}},
                "Outputs": {"BootstrapVersion": {"Value": version}}}
    boto3.client("cloudformation", region_name=region).create_stack(StackName="CDKToolkit",
                                                                     TemplateBody=json.dumps(template))


def test_bootstrap_version_against_the_assembly(moto: str, assemblies: dict[str, Assembly]) -> None:
    """The templates' CheckBootstrapVersion rule asks for 6; a 30 passes, a 5 blocks."""
    assembly = load_assembly(assemblies["dev"].path)
    assert assembly.required_bootstrap == 6
    for region, version, status in (("eu-west-1", "30", "pass"), ("eu-central-1", "5", "fail")):
        _bootstrap(region, version)
        ctx = context(account=MOTO_ACCOUNT, region=region)
        ctx.assembly = assembly
        check = pf.check_bootstrap(ctx, pf.Clients(region))
        assert check.status == status, check
        assert check.found.startswith(f"version {version}")
        assert ("need 6" in check.found)


def _quota_response(code: str, name: str, value: float) -> dict[str, Any]:
    # RECORDED: the shape of a real GetServiceQuota answer (service code ec2, unit None, account level).
    return {"Quota": {"ServiceCode": "ec2", "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
                      "QuotaArn": f"arn:aws:servicequotas:us-west-2:{MOTO_ACCOUNT}:ec2/{code}", "QuotaCode": code,
                      "QuotaName": name, "Value": value, "Unit": "None", "Adjustable": True, "GlobalQuota": False,
                      "QuotaAppliedAtLevel": "ACCOUNT"}}


def test_low_quotas_block(moto: str) -> None:
    """Need per class at max_size (moto's EC2 data gives the vCPUs): Inf = inferentia max_size × 4 vCPUs
    (inf2.xlarge) against a quota of 0; Standard = system max × 2 (m7i.large) + graviton max × 8 (c7g.2xlarge)
    + the load-test clients' 2 × 4 (c7i.xlarge, dev's 2 clients on 2 targets and the report) against a quota just
    above it."""
    groups = {g["name"]: g for g in cdk_context()[ENVIRONMENTS_KEY]["dev"]["node_groups"]}
    n_inf, n_sys, n_grav = (groups[n]["max_size"] for n in ("inferentia", "system", "graviton"))
    inf_need, std_need = n_inf * 4, n_sys * 2 + n_grav * 8 + 2 * 4
    sq = boto3.client("service-quotas", region_name="us-west-2")
    with Stubber(sq) as stub:
        stub.add_response("get_service_quota", _quota_response("L-1945791B", "Running On-Demand Inf instances", 0.0),
                          {"ServiceCode": "ec2", "QuotaCode": "L-1945791B"})
        stub.add_response("get_service_quota", _quota_response(
            "L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", float(std_need + 10)),
            {"ServiceCode": "ec2", "QuotaCode": "L-1216C47A"})
        checks = pf.check_quotas(context(account=MOTO_ACCOUNT), pf.Clients("us-west-2", {"service-quotas": sq}))
        stub.assert_no_pending_responses()
    inf, std = checks
    assert (inf.check, inf.status) == ("quota L-1945791B", "fail")
    assert inf.found == f"Running On-Demand Inf instances: 0 vCPUs; need {inf_need} vCPUs (inferentia {n_inf}×4)"
    assert inf.fix.startswith(f'request {inf_need} in Service Quotas → Amazon EC2 → "Running On-Demand Inf instances"')
    assert (std.check, std.status) == ("quota L-1216C47A", "pass")
    assert f"need {std_need} vCPUs (system {n_sys}×2, graviton {n_grav}×8, loadtest-clients 2×4)" in std.found


def _addon_versions(name: str, *versions: str) -> dict[str, Any]:
    # RECORDED: the shape of a real DescribeAddonVersions answer filtered by kubernetesVersion.
    return {"addons": [{"addonName": name, "type": "security", "publisher": "eks", "owner": "aws",
                        "addonVersions": [{"addonVersion": v, "architecture": ["amd64", "arm64"],
                                           "computeTypes": ["ec2"],
                                           "compatibilities": [{"clusterVersion": "1.36", "platformVersions": ["*"],
                                                                "defaultVersion": i == 0}],
                                           "requiresConfiguration": False, "requiresIamPermissions": False}
                                          for i, v in enumerate(versions)]}]}


@pytest.mark.parametrize(("offered", "status"), [(("v1.3.11-eksbuild.1", "v1.3.10-eksbuild.2"), "pass"),
                                                   (("v1.3.11-eksbuild.1", "v1.3.9-eksbuild.3"), "fail")])
def test_addon_version_for_the_kubernetes_version(moto: str, assemblies: dict[str, Assembly],
                                                  offered: tuple[str, ...], status: str) -> None:
    eks = boto3.client("eks", region_name="us-west-2")
    ctx = context(account=MOTO_ACCOUNT)
    pinned = ctx.config.addons
    configured = [("amazon-cloudwatch-observability", pinned.cloudwatch_observability),
                  ("eks-pod-identity-agent", pinned.pod_identity_agent), ("vpc-cni", pinned.vpc_cni)]
    assert sorted(ctx.addons()) == configured  # no assembly: what the cluster stack installs, read from the config
    ctx.assembly = load_assembly(assemblies["dev"].path)
    assert sorted(ctx.addons()) == configured and ctx.kubernetes_version == "1.36"
    assert pinned.pod_identity_agent == "v1.3.10-eksbuild.2"  # what `offered` is written against
    answers = {"eks-pod-identity-agent": offered, "vpc-cni": ("v9.9.9-eksbuild.1", pinned.vpc_cni),
               "amazon-cloudwatch-observability": (pinned.cloudwatch_observability,)}
    with Stubber(eks) as stub:
        for name, _ in ctx.addons():  # in the order preflight asks
            stub.add_response("describe_addon_versions", _addon_versions(name, *answers[name]),
                              {"addonName": name, "kubernetesVersion": "1.36"})
        checks = {c.check: c for c in pf.check_addons(ctx, pf.Clients("us-west-2", {"eks": eks}))}
    check, cni = checks["add-on eks-pod-identity-agent"], checks["add-on vpc-cni"]
    assert checks["add-on amazon-cloudwatch-observability"].status == "pass"
    assert (check.check, check.status) == ("add-on eks-pod-identity-agent", status)
    assert (cni.check, cni.status, cni.found) == ("add-on vpc-cni", "pass",
                                                  f"{pinned.vpc_cni} offered for Kubernetes 1.36")
    if status == "fail":
        assert check.found == ("v1.3.10-eksbuild.2 is not offered for Kubernetes 1.36 (offered: v1.3.11-eksbuild.1, "
                               "v1.3.9-eksbuild.3)")
        assert check.fix == "pin one of v1.3.11-eksbuild.1, v1.3.9-eksbuild.3 under addons in cdk.json"


def test_cluster_name_taken_outside_the_stack(moto: str, assemblies: dict[str, Assembly]) -> None:
    region = "ap-southeast-2"
    boto3.client("eks", region_name=region).create_cluster(
        name="eks-inference-dev", roleArn=f"arn:aws:iam::{MOTO_ACCOUNT}:role/eks", resourcesVpcConfig={})
    ctx = context(account=MOTO_ACCOUNT, region=region)
    ctx.assembly = load_assembly(assemblies["dev"].path)
    cluster = next(r for r in ctx.assembly.templates["EksInference-dev-Cluster"]["Resources"].values()
                   if r["Type"] == "AWS::EKS::Cluster")
    cluster["Properties"]["Name"] = "eks-inference-dev"
    (check,) = pf.check_stacks(ctx, pf.Clients(region))
    assert (check.status, check.found) == ("fail", "a cluster named eks-inference-dev exists outside stack "
                                                   "EksInference-dev-Cluster")

"""cdk-nag finds nothing unacknowledged, every acknowledgement has a reason, and our EKS checks bite."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk.assertions import Template
from aws_cdk.lambda_layer_kubectl_v36 import KubectlV36Layer

from eks_inference.checks import eks_findings
from tests.conftest import ROOT, Assembly


def plugin_reports(asm: Assembly) -> dict[str, dict[str, Any]]:
    return {p["pluginName"]: p for p in asm.validation_report["pluginReports"]}


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_cdk_nag_has_no_unacknowledged_findings(assemblies: dict[str, Assembly], env_name: str) -> None:
    reports = plugin_reports(assemblies[env_name])
    nag = reports["AwsSolutions"]
    assert nag["conclusion"] == "success" and nag["violations"] == []
    for report in reports.values():
        assert report["violations"] == [], report["pluginName"]
        for s in report.get("suppressedViolations", []):
            assert len(s["reason"]) >= 40, f"{s['ruleName']} acknowledged without a real reason: {s['reason']!r}"


def test_acknowledgements_stay_narrow(assemblies: dict[str, Assembly]) -> None:
    """Only managed policies, prefix or provider wildcards, runtimes, the log bucket's own logging and the log agent's
    streams in its own groups."""
    nag = plugin_reports(assemblies["dev"])["AwsSolutions"]
    rules = {s["ruleName"].split("[")[0] for s in nag["suppressedViolations"]}
    assert rules <= {"AwsSolutions-IAM4", "AwsSolutions-IAM5", "AwsSolutions-L1", "AwsSolutions-S1"}
    for s in nag["suppressedViolations"]:
        paths = [c["constructPath"] for c in s["violatingConstructs"]]
        if s["ruleName"].startswith("AwsSolutions-IAM5"):
            assert all("/KubectlProvider/" in p or "PodRole/" in p or "/ClusterAutoscaler/Role/" in p
                       or "/NodeCountProvider/Role/" in p or "/Logging/AgentRole/" in p
                       or "/LoadBalancerController/Policy/" in p for p in paths), paths
            if any("/LoadBalancerController/Policy/" in p for p in paths):  # its documented policy: describes, and
                # the load balancers, target groups, listeners and rules it names at run time
                assert re.search(r"\[Resource::\*\]$|:ec2:\*:\*:security-group/\*\]$|:elasticloadbalancing:\*:\*:"
                                 r"(loadbalancer|targetgroup|listener|listener-rule)/[^\]]*\]$", s["ruleName"]), \
                    s["ruleName"]
            if any("/Logging/AgentRole/" in p for p in paths):  # its own groups' streams, describes, one namespace
                own = r":log-group:/aws/containerinsights/[a-z0-9-]+/(application|dataplane|host|performance)"
                assert re.search(rf"\[Resource::\*\]$|:log-group:\*\]$|{own}:log-stream:\*\]$", s["ruleName"]), \
                    s["ruleName"]
            if any("/NodeCountProvider/Role/" in p for p in paths):  # Auto Scaling describes, the named groups
                assert re.search(r"\[Resource::\*\]$|:nodegroup/<[^>]+>/[a-z0-9-]+/\*\]$", s["ruleName"]), s["ruleName"]
            if any("/ClusterAutoscaler/Role/" in p for p in paths):  # describe calls, and eks-* groups by tag
                assert s["ruleName"].endswith(("[Resource::*]", ":autoScalingGroup:*:autoScalingGroupName/eks-*]")), \
                    s["ruleName"]
            if any("PodRole/" in p for p in paths):
                assert re.search(r"/(models|artifacts|results)/\*", s["ruleName"]), s["ruleName"]
        if s["ruleName"].startswith("AwsSolutions-S1"):
            assert all("/ModelRepository/AccessLogs/" in p for p in paths), paths


def test_our_eks_checks_pass_on_every_synthesized_template(assemblies: dict[str, Assembly]) -> None:
    for asm in assemblies.values():
        for path in asm.template_paths:
            import json

            assert eks_findings(json.loads(path.read_text())) == [], path.name


def test_our_eks_checks_flag_a_bare_aws_eks_v2_cluster() -> None:
    """cdk-nag's EKS rules stay silent here; ours report the open endpoint, missing logs and plain secrets."""
    stack = Stack(App(), "Bare")
    eks.Cluster(stack, "Cluster", version=eks.KubernetesVersion.V1_36,
                vpc=ec2.Vpc(stack, "Vpc", max_azs=2),
                kubectl_provider_options=eks.KubectlProviderOptions(kubectl_layer=KubectlV36Layer(stack, "Layer")))
    findings = eks_findings(Template.from_stack(stack).to_json())
    assert sorted(f.rule for f in findings) == ["EKSI-ControlPlaneLogging", "EKSI-EndpointOpen",
                                                "EKSI-SecretsEncryption"]
    by_rule = {f.rule: f for f in findings}
    assert "0.0.0.0/0" in by_rule["EKSI-EndpointOpen"].message
    assert "audit" in by_rule["EKSI-ControlPlaneLogging"].message


def test_partial_logging_and_open_cidr_are_reported() -> None:
    template = {"Resources": {"C": {"Type": "AWS::EKS::Cluster", "Properties": {
        "ResourcesVpcConfig": {"EndpointPublicAccess": True, "PublicAccessCidrs": ["10.0.0.0/8", "0.0.0.0/0"]},
        "Logging": {"ClusterLogging": {"EnabledTypes": [{"Type": "api"}, {"Type": "audit"}]}},
        "EncryptionConfig": [{"Resources": ["secrets"], "Provider": {"KeyArn": "arn:aws:kms:k"}}],
    }}}}
    msgs = {f.rule: f.message for f in eks_findings(template)}
    assert set(msgs) == {"EKSI-EndpointOpen", "EKSI-ControlPlaneLogging"}
    assert "authenticator" in msgs["EKSI-ControlPlaneLogging"]


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_cfn_lint_is_clean(assemblies: dict[str, Assembly], env_name: str) -> None:
    paths = [str(p) for p in assemblies[env_name].template_paths]
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "cfn-lint"), *paths], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

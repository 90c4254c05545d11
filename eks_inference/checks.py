"""Our own EKS checks: cdk-nag's EKS rules match the old ``aws_eks`` custom resource, not ``aws_eks_v2``.

The rules run on the synthesized templates (the same JSON that CloudFormation receives), so they hold
for any way a cluster was written, and a violation stops synth like a cdk-nag finding does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsii
from aws_cdk import (
    App,
    IPolicyValidationContext,
    IPolicyValidationPlugin,
    PolicyValidationPluginReport,
    PolicyViolatingResource,
    PolicyViolation,
    Validations,
)

REQUIRED_LOG_TYPES = frozenset({"api", "audit", "authenticator", "controllerManager", "scheduler"})


@dataclass(frozen=True)
class Finding:
    rule: str
    logical_id: str
    message: str
    fix: str


def _is_open_cidr(cidr: Any) -> bool:
    return isinstance(cidr, str) and cidr.strip().endswith("/0")


def eks_findings(template: Mapping[str, Any]) -> list[Finding]:
    """Every ``AWS::EKS::Cluster`` must keep its API off the open internet, log everything, encrypt secrets."""
    findings: list[Finding] = []
    for logical_id, res in (template.get("Resources") or {}).items():
        if res.get("Type") != "AWS::EKS::Cluster":
            continue
        props = res.get("Properties") or {}
        vpc_cfg = props.get("ResourcesVpcConfig") or {}
        public = vpc_cfg.get("EndpointPublicAccess", True)
        cidrs = vpc_cfg.get("PublicAccessCidrs")
        if public is not False and (not cidrs or any(_is_open_cidr(c) for c in cidrs)):
            findings.append(Finding(
                "EKSI-EndpointOpen", logical_id,
                f"the public API endpoint is reachable from {cidrs or ['0.0.0.0/0']}",
                "restrict public_access_cidrs or use endpoint_access: private",
            ))
        enabled: set[str] = set()
        for entry in ((props.get("Logging") or {}).get("ClusterLogging") or {}).get("EnabledTypes") or []:
            if isinstance(entry, Mapping) and isinstance(entry.get("Type"), str):
                enabled.add(entry["Type"])
        missing = sorted(REQUIRED_LOG_TYPES - enabled)
        if missing:
            findings.append(Finding(
                "EKSI-ControlPlaneLogging", logical_id,
                f"control-plane log types {missing} are not enabled", "enable all five cluster log types",
            ))
        encrypted = any(
            "secrets" in (cfg.get("Resources") or []) and (cfg.get("Provider") or {}).get("KeyArn")
            for cfg in props.get("EncryptionConfig") or []
            if isinstance(cfg, Mapping)
        )
        if not encrypted:
            findings.append(Finding(
                "EKSI-SecretsEncryption", logical_id,
                "Kubernetes secrets are not envelope-encrypted with a KMS key",
                "pass secrets_encryption_key (a customer-managed key with rotation)",
            ))
    return findings


@jsii.implements(IPolicyValidationPlugin)
class EksSecurityChecks:
    """A CDK validation plugin running :func:`eks_findings` over every synthesized template."""

    @property
    def name(self) -> str:
        return "eks-inference-eks-checks"

    @property
    def version(self) -> str | None:
        return "1"

    @property
    def rule_ids(self) -> list[str] | None:
        return ["EKSI-EndpointOpen", "EKSI-ControlPlaneLogging", "EKSI-SecretsEncryption"]

    def validate(self, context: IPolicyValidationContext) -> PolicyValidationPluginReport:
        violations: list[PolicyViolation] = []
        for path in context.template_paths:
            with open(path, encoding="utf-8") as fh:
                template = json.load(fh)
            for f in eks_findings(template):
                violations.append(PolicyViolation(
                    rule_name=f.rule,
                    description=f.message,
                    fix=f.fix,
                    violating_resources=[PolicyViolatingResource(
                        resource_logical_id=f.logical_id, template_path=path, locations=[])],
                ))
        return PolicyValidationPluginReport(success=not violations, violations=violations)

    @staticmethod
    def apply(app: App) -> None:
        Validations.of(app).add_plugins(EksSecurityChecks())

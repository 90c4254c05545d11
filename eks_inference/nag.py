"""Acknowledging cdk-nag findings with a written reason per rule.

cdk-nag 3 reports a rule once per finding (``AwsSolutions-IAM4[Policy::<arn>]``) and CDK only
accepts an acknowledgement of that exact id. Writing out generated ARNs and logical ids by hand is
brittle, so :func:`acknowledge` asks cdk-nag which findings a construct has and acknowledges those
whose *rule* has a reason here. A finding of any other rule stays and fails synth.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Acknowledgment, CfnResource, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

PACK = "AwsSolutions"


def findings(scope: IConstruct) -> list[str]:
    """Rule ids (with their finding suffix) that AwsSolutionsChecks reports under ``scope``."""
    report = AwsSolutionsChecks().validate_scope(scope)
    return sorted({v.rule_name for v in report.violations})


def acknowledge(scope: IConstruct, reasons: Mapping[str, str]) -> list[str]:
    """Acknowledge on ``scope`` each finding whose rule (``AwsSolutions-IAM4``) has a reason.

    Call it once the construct is complete (policies are often added late). Returns the ids acknowledged.
    """
    done: list[str] = []
    for rule_id in findings(scope):
        base = rule_id.split("[", 1)[0]
        reason = reasons.get(base)
        if reason:
            Validations.of(scope).acknowledge(Acknowledgment(id=f"{PACK}::{rule_id}", reason=reason))
            done.append(rule_id)
    return done


def checkov_skip(scope: IConstruct, resource_type: str, reasons: Mapping[str, str]) -> int:
    """Record, on every ``resource_type`` under ``scope``, which checkov checks do not apply and why.

    checkov reads ``Metadata.checkov.skip`` per resource, so a skip never hides the same finding on
    another resource. Returns how many resources were marked.
    """
    marked = 0
    for node in scope.node.find_all():
        if isinstance(node, CfnResource) and node.cfn_resource_type == resource_type:
            current = node.get_metadata("checkov") or {}
            skips = list(current.get("skip", []))
            skips += [{"id": check, "comment": reason} for check, reason in reasons.items()]
            node.add_metadata("checkov", {"skip": skips})
            marked += 1
    return marked

"""Who may assume each role: the conditions every service trust carries, as each service's documentation gives them.

A role that trusts a service principal with no condition can be handed to that service by anyone in the account who
may pass the role, for any resource of theirs. The conditions here bind each trust to this deployment:

* **EKS Pod Identity** (``pods.eks.amazonaws.com``) tags the session with the pod's cluster, namespace and service
  account (EKS User Guide, "Create IAM role with trust policy required by EKS Pod Identity" and "List of session tags
  added by EKS Pod Identity"). The trust requires all three, so a Pod Identity association made for any other
  service account or cluster gets no credentials, and one created with ``disableSessionTags`` gets none either.
* **Services acting for one of our resources** (the EKS control plane, VPC flow logs, the managed Prometheus
  scraper) send ``aws:SourceAccount`` and ``aws:SourceArn`` (IAM User Guide, "The confused deputy problem"; EKS User
  Guide, "Cross-service confused deputy prevention in Amazon EKS"; VPC User Guide, "IAM role for publishing flow logs
  to CloudWatch Logs"). Where the resource's ARN exists only after the role (a generated cluster name, a flow log
  id), the ARN's unknown part is a wildcard inside this account and region, as those pages direct.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from aws_cdk import Aws, CfnResource
from aws_cdk import aws_iam as iam
from constructs import Construct

from eks_inference.config import ConfigError

POD_IDENTITY_SERVICE = "pods.eks.amazonaws.com"
POD_IDENTITY_TAGS = ("eks-cluster-arn", "kubernetes-namespace", "kubernetes-service-account")
"""The session tags a Pod Identity trust requires, in the order :func:`pod_identity_conditions` names them."""


def pod_identity_conditions(*, cluster_arn: str, namespace: str, service_account: str) -> dict[str, Any]:
    """The trust conditions that admit only pods of ``namespace/service_account`` on the cluster ``cluster_arn``."""
    for where, value in (("namespace", namespace), ("service_account", service_account)):
        if not isinstance(value, str) or not value or "*" in value or "?" in value:
            raise ConfigError(f"Pod Identity trust {where}: {value!r} is not one Kubernetes name; give the exact "
                              "name (a wildcard would admit other service accounts)")
    values = (cluster_arn, namespace, service_account)
    return {"StringEquals": {f"aws:RequestTag/{tag}": v for tag, v in zip(POD_IDENTITY_TAGS, values, strict=True)}}


def pod_identity_role(scope: Construct, construct_id: str, *, description: str, cluster_arn: str, namespace: str,
                      service_account: str) -> iam.Role:
    """An IAM role that EKS Pod Identity hands only to pods of one service account of one cluster."""
    principal = iam.ServicePrincipal(POD_IDENTITY_SERVICE, conditions=pod_identity_conditions(
        cluster_arn=cluster_arn, namespace=namespace, service_account=service_account))
    return iam.Role(scope, construct_id, description=description, assumed_by=iam.SessionTagsPrincipal(principal))


def source_conditions(source_arn: str) -> dict[str, Any]:
    """``aws:SourceAccount`` is this account and ``aws:SourceArn`` matches ``source_arn`` (wildcards allowed)."""
    return {"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}, "ArnLike": {"aws:SourceArn": source_arn}}


def own_arn(service: str, resource: str) -> str:
    """``arn:<partition>:<service>:<region>:<account>:<resource>`` of this stack's account and region."""
    return f"arn:{Aws.PARTITION}:{service}:{Aws.REGION}:{Aws.ACCOUNT_ID}:{resource}"


def restrict_service_trust(role: iam.IRole, service: str, conditions: Mapping[str, Any]) -> None:
    """Add ``conditions`` to the trust statement of ``role`` that admits ``service``, for roles that aws-cdk-lib
    creates itself (the cluster's, the flow log's): renaming or replacing them would replace what uses them."""
    cfn = cast(CfnResource, role.node.default_child)
    doc = role.stack.resolve(cast(iam.Role, role).assume_role_policy)
    statements = doc["Statement"] if doc else []
    found = [i for i, st in enumerate(statements) if st.get("Principal") == {"Service": service}]
    if len(found) != 1 or statements[found[0]].get("Condition"):
        raise ConfigError(f"role {role.node.path}: expected one unconditioned trust of {service}, found "
                          f"{[st.get('Principal') for st in statements]}; add its conditions where the role is made")
    cfn.add_property_override(f"AssumeRolePolicyDocument.Statement.{found[0]}.Condition", dict(conditions))

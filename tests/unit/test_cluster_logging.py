"""ClusterLogging: the control-plane and container log groups exist before what writes to them, with the
environment's retention and a rotating customer key that CloudWatch Logs may use for those groups only; the log
agent's role reaches only the add-on's service account and writes only to those groups."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_eks_v2 as eks
from aws_cdk.assertions import Match, Template

from eks_inference.config import ConfigError
from eks_inference.constructs.cluster_logging import (
    AGENT_ADDON,
    AGENT_NAMESPACE,
    AGENT_SERVICE_ACCOUNT,
    CONTAINER_LOG_GROUPS,
    ClusterLogging,
)

ENV = cdk.Environment(account="111122223333", region="us-west-2")


def build(**kw: Any) -> tuple[cdk.Stack, ClusterLogging]:
    stack = cdk.Stack(cdk.App(), "Bare", env=ENV)
    return stack, ClusterLogging(stack, "Logging", **{"cluster_name": "eks-inference-dev", "retention_days": 30,
                                                      **kw})


def test_every_group_is_named_for_the_cluster_kept_for_the_retention_and_encrypted() -> None:
    """GIVEN a cluster name and a 30-day retention WHEN synthesized THEN the control-plane group EKS writes to and the
    four Container Insights groups exist with that retention and the construct's rotating key, retained on delete."""
    stack, _ = build()
    t = Template.from_stack(stack)
    names = ["/aws/eks/eks-inference-dev/cluster",
             *(f"/aws/containerinsights/eks-inference-dev/{k}" for k in CONTAINER_LOG_GROUPS)]
    for name in names:
        t.has_resource("AWS::Logs::LogGroup", {
            "Properties": {"LogGroupName": name, "RetentionInDays": 30,
                           "KmsKeyId": {"Fn::GetAtt": [Match.string_like_regexp("LoggingKey"), "Arn"]}},
            "DeletionPolicy": "Retain"})
    t.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


def test_the_key_admits_cloudwatch_logs_for_each_group_and_no_other() -> None:
    """GIVEN the construct WHEN its key policy is read THEN each group has one statement for logs.<region> whose
    encryption-context condition names exactly that group's ARN (no wildcard)."""
    stack, _ = build()
    (key,) = Template.from_stack(stack).find_resources("AWS::KMS::Key").values()
    statements = [s for s in key["Properties"]["KeyPolicy"]["Statement"]
                  if s.get("Principal", {}).get("Service") == "logs.us-west-2.amazonaws.com"]
    arns = [stack.resolve(s["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"]) for s in statements]
    assert len(arns) == 1 + len(CONTAINER_LOG_GROUPS)
    assert all("*" not in str(a) and "log-group:/aws/" in str(a) for a in arns)


@pytest.mark.parametrize(("kw", "match"), [
    ({"retention_days": 10}, r"retention_days: 10 is not a CloudWatch retention; use one of"),
    ({"cluster_name": cdk.Token.as_string(cdk.Aws.STACK_NAME)}, r"cluster_name: .* is not known at synth; give"),
])
def test_bad_input_is_refused_before_anything_is_created(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build(**kw)


def test_the_agent_writes_only_to_its_groups_under_its_own_service_account() -> None:
    """GIVEN the construct and a cluster WHEN the agent is added THEN the add-on is pinned, ships container logs, binds
    its service account to a role trusted by that service account only, writes to the container groups only, and
    waits for them; the cluster itself waits for the control-plane group."""
    stack, logging = build()
    cluster = eks.Cluster(stack, "Cluster", version=eks.KubernetesVersion.of("1.36"), cluster_name="eks-inference-dev",
                          default_capacity_type=eks.DefaultCapacityType.NODEGROUP, default_capacity=0)
    logging.before(cluster)
    logging.add_agent(cluster, version="v4.6.0-eksbuild.1", cluster_arn=cluster.cluster_arn)
    t = Template.from_stack(stack)
    (cluster_id,) = t.find_resources("AWS::EKS::Cluster")
    control_plane = next(k for k, r in t.find_resources("AWS::Logs::LogGroup").items()
                         if r["Properties"]["LogGroupName"].endswith("/cluster"))
    assert control_plane in t.to_json()["Resources"][cluster_id]["DependsOn"]
    addons = t.find_resources("AWS::EKS::Addon", {"Properties": {"AddonName": AGENT_ADDON}})
    (addon,) = addons.values()
    assert addon["Properties"]["AddonVersion"] == "v4.6.0-eksbuild.1"
    assert '"enabled":true' in addon["Properties"]["ConfigurationValues"].replace(" ", "")
    (assoc,) = addon["Properties"]["PodIdentityAssociations"]
    assert assoc["ServiceAccount"] == AGENT_SERVICE_ACCOUNT
    groups = {k for k, r in t.find_resources("AWS::Logs::LogGroup").items() if k != control_plane}
    assert groups <= set(addon["DependsOn"])
    role_id = assoc["RoleArn"]["Fn::GetAtt"][0]
    trust = t.to_json()["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Condition"]["StringEquals"]["aws:RequestTag/kubernetes-namespace"] == AGENT_NAMESPACE
    assert trust["Condition"]["StringEquals"]["aws:RequestTag/kubernetes-service-account"] == AGENT_SERVICE_ACCOUNT
    (policy,) = [p for p in t.find_resources("AWS::IAM::Policy").values()
                 if {"Ref": role_id} in p["Properties"]["Roles"]]
    (write,) = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s.get("Sid") == "WriteContainerLogs"]
    resources = [str(stack.resolve(r)) for r in write["Resource"]]
    assert all("/aws/containerinsights/eks-inference-dev/" in r for r in resources)
    assert not any("/aws/eks/" in r for r in resources) and "logs:DeleteLogGroup" not in write["Action"]

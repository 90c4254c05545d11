"""Logs that outlive the pods and nodes that wrote them: the control plane's and every container's, in CloudWatch Logs.

EKS writes the control plane's logs to ``/aws/eks/<cluster>/cluster`` and creates that group itself, without a
retention or a customer key, the first time logging is on (EKS User Guide, "Send control plane logs to CloudWatch
Logs"). Created here first, with the environment's retention and this construct's key, the group is the one EKS writes
to; the cluster must therefore have a fixed name and depend on the group (:meth:`ClusterLogging.before`).

Container logs (every pod's stdout and stderr, Ray's and the replicas' included) go through the
``amazon-cloudwatch-observability`` EKS add-on's Fluent Bit DaemonSet to ``/aws/containerinsights/<cluster>/…``
(CloudWatch User Guide, "Send logs to CloudWatch Logs" for Container Insights: ``application``, ``dataplane``,
``host``; the agent's ``performance`` group). The add-on would create those groups on first write, again with neither
retention nor key; here they exist before the add-on does. Its role reaches the add-on's service account through EKS
Pod Identity (add-on 3.1.0 and later) and may write only to these groups.

The key admits CloudWatch Logs only for these groups: its ARN pattern is the encryption context CloudWatch Logs sends
(CloudWatch Logs User Guide, "Encrypt log data in CloudWatch Logs using AWS KMS").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from aws_cdk import CfnResource, RemovalPolicy, Token
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from eks_inference.config import ConfigError
from eks_inference.constructs.trust import own_arn, pod_identity_role

AGENT_ADDON = "amazon-cloudwatch-observability"
AGENT_NAMESPACE = "amazon-cloudwatch"
AGENT_SERVICE_ACCOUNT = "cloudwatch-agent"
"""The add-on runs its CloudWatch agent and Fluent Bit under this service account (its Pod Identity association)."""
CONTAINER_LOG_GROUPS = ("application", "dataplane", "host", "performance")
RETENTION_DAYS: dict[int, logs.RetentionDays] = {
    1: logs.RetentionDays.ONE_DAY, 3: logs.RetentionDays.THREE_DAYS, 5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK, 14: logs.RetentionDays.TWO_WEEKS, 30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS, 90: logs.RetentionDays.THREE_MONTHS, 120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS, 180: logs.RetentionDays.SIX_MONTHS, 365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS, 545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS, 1096: logs.RetentionDays.THREE_YEARS, 1827: logs.RetentionDays.FIVE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


def control_plane_log_group_name(cluster_name: str) -> str:
    return f"/aws/eks/{cluster_name}/cluster"


def container_log_group_name(cluster_name: str, kind: str) -> str:
    return f"/aws/containerinsights/{cluster_name}/{kind}"


class ClusterLogging(Construct):
    """The cluster's log groups, created before the cluster and the log agent, with retention and a customer key.

    :param cluster_name: the EKS cluster's name, known at synth (the groups are named after it).
    :param retention_days: how long every group keeps events; one of CloudWatch's retention choices.
    :param removal_policy: the groups' and key's; default RETAIN (logs are evidence after a stack is gone).
    """

    def __init__(self, scope: Construct, construct_id: str, *, cluster_name: str, retention_days: int,
                 removal_policy: RemovalPolicy = RemovalPolicy.RETAIN) -> None:
        super().__init__(scope, construct_id)
        if not isinstance(cluster_name, str) or Token.is_unresolved(cluster_name) or not cluster_name:
            raise ConfigError(f"ClusterLogging cluster_name: {cluster_name!r} is not known at synth; give the cluster "
                              "a fixed name (its log groups are named after it and must exist before it)")
        if retention_days not in RETENTION_DAYS:
            raise ConfigError(f"ClusterLogging retention_days: {retention_days!r} is not a CloudWatch retention; use "
                              f"one of {sorted(RETENTION_DAYS)}")
        self.cluster_name = cluster_name
        names = [control_plane_log_group_name(cluster_name),
                 *(container_log_group_name(cluster_name, k) for k in CONTAINER_LOG_GROUPS)]
        self.key = kms.Key(self, "Key", enable_key_rotation=True, removal_policy=removal_policy,
                           description=f"Encrypts the control-plane and container log groups of {cluster_name}")
        for name in names:  # one statement per group: each admits CloudWatch Logs for exactly that group
            self.key.add_to_resource_policy(iam.PolicyStatement(
                principals=[iam.ServicePrincipal(f"logs.{self.key.stack.region}.amazonaws.com")],
                actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
                resources=["*"],
                conditions={"ArnEquals": {"kms:EncryptionContext:aws:logs:arn": own_arn("logs", f"log-group:{name}")}},
            ))
        retention = RETENTION_DAYS[retention_days]
        self.control_plane = logs.LogGroup(self, "ControlPlane", log_group_name=names[0], retention=retention,
                                           encryption_key=self.key, removal_policy=removal_policy)
        """``/aws/eks/<cluster>/cluster``: API server, audit, authenticator, controller manager, scheduler."""
        self.containers: dict[str, logs.LogGroup] = {
            kind: logs.LogGroup(self, kind.capitalize(), log_group_name=name, retention=retention,
                                encryption_key=self.key, removal_policy=removal_policy)
            for kind, name in zip(CONTAINER_LOG_GROUPS, names[1:], strict=True)
        }
        """``/aws/containerinsights/<cluster>/{application,dataplane,host,performance}``, by kind."""
        self.agent: eks.Addon | None = None
        self.agent_role: iam.Role | None = None

    @property
    def log_groups(self) -> list[logs.LogGroup]:
        return [self.control_plane, *self.containers.values()]

    def before(self, cluster: eks.Cluster) -> None:
        """Make CloudFormation create the control-plane group (and its key) before ``cluster``, which must carry
        :attr:`cluster_name`: otherwise EKS creates the group first and the stack's own fails as already existing."""
        cfn = cast(CfnResource, cluster.node.default_child)
        cfn.add_resource_dependency(cast(CfnResource, self.control_plane.node.default_child))

    def add_agent(self, cluster: eks.Cluster, *, version: str, cluster_arn: str,
                  after: Sequence[Construct] = ()) -> eks.Addon:
        """The ``amazon-cloudwatch-observability`` add-on at ``version``, shipping container logs to the groups here.

        Its Pod Identity role may create streams and put events in these groups only (and ``CreateLogGroup`` on their
        names, which Fluent Bit's ``auto_create_group`` calls and which answers "already exists"), write the agent's
        metrics to the ``ContainerInsights`` namespace, and describe what the agent tags its data with.
        """
        self.agent_role = role = pod_identity_role(
            self, "AgentRole", description="Log agent: container logs to this cluster's log groups",
            cluster_arn=cluster_arn, namespace=AGENT_NAMESPACE, service_account=AGENT_SERVICE_ACCOUNT)
        groups = [own_arn("logs", f"log-group:{container_log_group_name(self.cluster_name, k)}")
                  for k in CONTAINER_LOG_GROUPS]
        role.add_to_policy(iam.PolicyStatement(
            sid="WriteContainerLogs",
            actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            resources=[*groups, *(f"{g}:log-stream:*" for g in groups)]))
        role.add_to_policy(iam.PolicyStatement(
            sid="FindLogGroups", actions=["logs:DescribeLogGroups"],
            resources=[own_arn("logs", "log-group:*")]))
        role.add_to_policy(iam.PolicyStatement(
            sid="AgentMetrics", actions=["cloudwatch:PutMetricData"], resources=["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": "ContainerInsights"}}))
        role.add_to_policy(iam.PolicyStatement(
            sid="DescribeNodes", actions=["ec2:DescribeTags", "ec2:DescribeVolumes", "ec2:DescribeInstances"],
            resources=["*"]))
        # jsii's Cluster satisfies ICluster at run time; mypy cannot see it through the protocol.
        self.agent = eks.Addon(self, "Agent", cluster=cast(eks.ICluster, cluster), addon_name=AGENT_ADDON,
                               addon_version=version, configuration_values={"containerLogs": {"enabled": True}},
                               preserve_on_delete=False)
        cfn = cast(CfnResource, self.agent.node.default_child)
        cfn.add_property_override("PodIdentityAssociations",
                                  [{"ServiceAccount": AGENT_SERVICE_ACCOUNT, "RoleArn": role.role_arn}])
        for group in self.containers.values():
            self.agent.node.add_dependency(group)
        for construct in after:
            self.agent.node.add_dependency(construct)
        return self.agent

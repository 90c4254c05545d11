"""The DesiredSize a managed node group's deploy carries: the count it runs now, so that a deploy which changes
only its bounds (``min_size``, ``max_size``) leaves its nodes alone.

Why a custom resource rather than a number in the template:

* CloudFormation hands ``AWS::EKS::Nodegroup``'s ``ScalingConfig`` to ``eks:UpdateNodegroupConfig`` whole when any
  of its sizes changes, ``DesiredSize`` included though unchanged, and EKS then sets the group to that size
  ("Whenever this parameter changes, the number of worker nodes in the node group is updated to the specified
  size ... When using CloudFormation, no action occurs if you remove this parameter", EKS API reference,
  ``NodegroupScalingConfig``). eksctl, which once scaled node groups by editing their stacks, saw a max-only
  change set a group back to the stack's DesiredSize (eksctl-io/eksctl#3532) and since calls EKS and Auto
  Scaling directly (``pkg/actions/nodegroup/scale.go``). A constant ``DesiredSize`` would therefore reset a group
  the Cluster Autoscaler had grown (dev's Inferentia group to 0, under its Ray workers) whenever its bounds
  change.
* Leaving ``DesiredSize`` out is not possible: EKS requires it when it creates a group ("When creating a node
  group, you must specify all or none of the properties"), and a template cannot tell a creating deploy from a
  later one.
* EKS refuses bounds the current count lies outside ("Minimum capacity 2 can't be greater than desired size
  1"), and the Cluster Autoscaler does not raise a group to a new minimum (``--enforce-node-group-min-size`` is
  off by default and here).

So each group's ``DesiredSize`` is this resource's ``Size``: a small function reads the group's running count
(its Auto Scaling group's desired capacity, which the Cluster Autoscaler writes) and returns it, moved into the
new bounds only where it lies outside them; a group that does not exist yet starts at its initial size. The
resource's properties are the bounds, the initial size and the group's name, so it runs exactly when one of them
changes, right before CloudFormation updates (or replaces) the group, and CloudFormation then sends the count
the group already has. What can still move the count is what a user asked for: a new ``min_size`` above it adds
nodes, a new ``max_size`` below it removes nodes.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CustomResource, Duration, RemovalPolicy, Stack, Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

HANDLER = Path(__file__).with_name("node_count_handler.py")
"""The function's source, inlined into the template (``index.handler``)."""
RESOURCE_TYPE = "Custom::NodeCount"
_PROVIDER_ID = "NodeCountProvider"


class NodeCountProvider(Construct):
    """The one function per stack that answers every :class:`NodeCount` in it, with its role and log group.

    The role may describe the stack's node groups (each :class:`NodeCount` adds its own) and Auto Scaling groups
    (``autoscaling:DescribeAutoScalingGroups`` has no resource-level permissions), and write its own logs.
    """

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.ONE_MONTH,
                                       removal_policy=RemovalPolicy.DESTROY)
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description="Reads the node count of eks-inference's node groups during deploys")
        self.log_group.grant_write(self.role)
        self.role.add_to_policy(iam.PolicyStatement(actions=["autoscaling:DescribeAutoScalingGroups"],
                                                    resources=["*"]))
        self.function = lambda_.Function(
            self, "Function", runtime=lambda_.Runtime.PYTHON_3_14, handler="index.handler",
            code=lambda_.Code.from_inline(HANDLER.read_text()), timeout=Duration.minutes(1), role=self.role,
            log_group=self.log_group, description="The node count a deploy leaves each eks-inference node group at")

    @classmethod
    def of(cls, scope: Construct) -> NodeCountProvider:
        """The stack's provider, made on first use."""
        stack = Stack.of(scope)
        found = stack.node.try_find_child(_PROVIDER_ID)
        return found if isinstance(found, NodeCountProvider) else cls(stack, _PROVIDER_ID)


class NodeCount(Construct):
    """The count a deploy gives one node group (module docstring); :attr:`size` is its ``DesiredSize``.

    :param cluster_name: the cluster the group belongs to.
    :param nodegroup_name: the group's name (concrete: the function looks the group up by it).
    :param min_size: the group's lower bound in this deploy.
    :param max_size: the group's upper bound in this deploy.
    :param initial_size: what a new group starts at (kept within the bounds).
    """

    def __init__(self, scope: Construct, construct_id: str, *, cluster_name: str, nodegroup_name: str,
                 min_size: int, max_size: int, initial_size: int) -> None:
        super().__init__(scope, construct_id)
        provider = NodeCountProvider.of(self)
        provider.role.add_to_policy(iam.PolicyStatement(
            actions=["eks:DescribeNodegroup"],
            resources=[Stack.of(self).format_arn(service="eks", resource="nodegroup",
                                                 resource_name=f"{cluster_name}/{nodegroup_name}/*")]))
        self.resource = CustomResource(self, "Resource", service_token=provider.function.function_arn,
                                       resource_type=RESOURCE_TYPE, properties={
                                           "ClusterName": cluster_name, "NodegroupName": nodegroup_name,
                                           "MinSize": min_size, "MaxSize": max_size, "InitialSize": initial_size})
        self.resource.node.add_dependency(provider.role)
        self.size = Token.as_number(self.resource.get_att("Size"))
        """The DesiredSize to render: the running count within the bounds, or the initial size of a new group."""

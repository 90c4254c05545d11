"""The Kubernetes Cluster Autoscaler for the cluster's managed node groups, with a Pod Identity role scoped to them."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from aws_cdk import Aws, Duration
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from eks_inference.config import KUBERNETES_VERSION, AddonVersions, CapacityType, ConfigError
from eks_inference.constructs.processor_node_group import PROCESSOR_LABEL, ProcessorNodeGroup
from eks_inference.constructs.trust import pod_identity_role
from eks_inference.k8s.pod import Resources
from eks_inference.tables.prices import DEFAULT_PRICES, PriceTable

NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "cluster-autoscaler"
"""Named explicitly: the EKS Pod Identity association binds by namespace and service-account name, and the
chart's generated name would follow the release and cloud provider."""
RELEASE = "cluster-autoscaler"
EXPANDER = "priority,least-waste"
"""``price`` is not implemented for AWS (the AWS cloud provider's Pricing() returns ErrNotImplemented, and the
expander factory then exits at start). ``priority`` with a list ordered by the price table prefers the cheaper
group when several could take a pending pod; ``least-waste`` decides between groups of one priority."""
BALANCING_IGNORED_LABELS = ("eks.amazonaws.com/sourceLaunchTemplateId", "eks.amazonaws.com/sourceLaunchTemplateVersion")
"""Labels EKS puts on nodes of groups with a launch template, different for every group: left out of the
comparison that balance-similar-node-groups makes (CA's AWS list already leaves out eks.amazonaws.com/nodegroup)."""
RESOURCES = Resources(cpu="100m", cpu_limit="500m", memory="600Mi")
"""The autoscaler's requests; counted with the operators on the system nodes."""
SCALE_DOWN_UNNEEDED = "10m"
SCALE_DOWN_DELAY_AFTER_ADD = "10m"
MAX_NODE_PROVISION_TIME = "15m"

_READ_ACTIONS = (
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeLaunchConfigurations",
    "autoscaling:DescribeScalingActivities",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:GetInstanceTypesFromInstanceRequirements",
)
MUTATING_ACTIONS = ("autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup")
CLUSTER_TAG = "eks:cluster-name"
"""EKS tags every managed node group's Auto Scaling group with ``eks:cluster-name`` and ``eks:nodegroup-name``
(the autoscaler recognises managed groups by them, cloudprovider/aws/aws_manager.go); the mutating actions are
allowed only on groups whose tag names this cluster."""
DISCOVERY_TAG = "k8s.io/cluster-autoscaler/enabled"


def asg_name_pattern(nodegroup_name: str) -> str:
    """A regular expression for the Auto Scaling group EKS creates for a managed node group: ``eks-<name>-<uuid>``
    (the priority expander matches node-group ids, which are Auto Scaling group names on AWS). Node group names
    are kebab-case, so nothing in them needs escaping."""
    if not re.fullmatch(r"[a-z0-9-]+", nodegroup_name):
        raise ValueError(f"node group name {nodegroup_name!r} is not kebab-case")
    return f"^eks-{nodegroup_name}-[0-9a-f-]+$"


def expander_priorities(groups: Sequence[ProcessorNodeGroup] | Sequence[tuple[str, str, CapacityType]],
                        *, region: str, prices: PriceTable = DEFAULT_PRICES) -> dict[str, list[str]]:
    """The priority expander's list: the cheaper a group's node (its first instance type, from the price table),
    the higher its priority; Spot groups above On-Demand ones of the same type. Groups of equal price share a
    priority (least-waste decides between them); groups without a price, and any group discovered later, fall to
    the catch-all ``.*`` at priority 1, below every priced group.

    ``groups`` are node groups or ``(node group name, instance type, capacity type)`` triples.
    """
    rows: list[tuple[tuple[float, int] | None, str]] = []
    for g in groups:
        if isinstance(g, ProcessorNodeGroup):
            name, itype, capacity = g.nodegroup_name, g.spec.instance_types[0], g.spec.capacity_type
        else:
            name, itype, capacity = g
        price = prices.hourly(itype, region)
        # The table holds On-Demand list prices; a Spot node of the same type costs less.
        rows.append((None if price is None else (price, 0 if capacity is CapacityType.SPOT else 1),
                     asg_name_pattern(name)))
    cheapest_first = sorted({k for k, _ in rows if k is not None})
    out: dict[str, list[str]] = {"1": [".*"]}
    for rank, key in enumerate(cheapest_first):
        out[str(10 * (len(cheapest_first) - rank))] = sorted(p for k, p in rows if k == key)
    return out


def check_image_minor(tag: str) -> None:
    """The autoscaler's minor must be the cluster's: its scheduler simulation is Kubernetes' own scheduler code
    of that release (cluster-autoscaler/README.md, "Releases")."""
    m = re.match(r"^v?(\d+)\.(\d+)\.", tag)
    if not m or f"{m[1]}.{m[2]}" != KUBERNETES_VERSION:
        raise ConfigError(
            f"addons.cluster_autoscaler_image: {tag!r} is not a Cluster Autoscaler for Kubernetes "
            f"{KUBERNETES_VERSION}; use the newest v{KUBERNETES_VERSION}.x release, e.g. v{KUBERNETES_VERSION}.1"
        )


class ClusterAutoscaler(Construct):
    """Cluster Autoscaler (Helm, pinned) that sizes the managed node groups between their min and max size.

    - Auto-discovery: EKS tags every managed node group's Auto Scaling group with ``k8s.io/cluster-autoscaler/
      enabled`` and ``k8s.io/cluster-autoscaler/<cluster>``, the chart's default discovery tags.
    - Scale from zero: for a group with no node the autoscaler builds a template node from the instance type,
      the group's labels and taints (eks:DescribeNodegroup) and its node-template resource tags
      (:func:`~eks_inference.constructs.processor_node_group.autoscaler_tags`).
    - Expander ``priority,least-waste`` with :func:`expander_priorities`; ``balance-similar-node-groups`` keeps
      similar groups (per-AZ groups of one kind) the same size.
    - IAM through EKS Pod Identity: describe calls on ``*`` (they have no resource-level permissions),
      eks:DescribeNodegroup on this cluster's node groups, and the two mutating calls only on Auto Scaling groups
      tagged ``eks:cluster-name=<this cluster>``. The role trusts only the autoscaler's service account on this
      cluster (:func:`~eks_inference.constructs.trust.pod_identity_role`).

    :param cluster: the cluster; the chart is installed through its kubectl provider.
    :param node_groups: the groups to scale (their names order the priority list).
    :param addons: pinned chart, repository and image tag.
    :param region: the cluster's region (the autoscaler's ``AWS_REGION``; no IMDS lookup).
    :param node_selector: where the autoscaler runs; default the system nodes.
    :param prices: orders the priority list; default the project's price table.
    """

    def __init__(self, scope: Construct, construct_id: str, *, cluster: eks.Cluster,
                 node_groups: Sequence[ProcessorNodeGroup], addons: AddonVersions, region: str,
                 node_selector: Mapping[str, str] | None = None, prices: PriceTable = DEFAULT_PRICES) -> None:
        super().__init__(scope, construct_id)
        check_image_minor(addons.cluster_autoscaler_image)
        self.node_groups = list(node_groups)
        self.role = pod_identity_role(
            self, "Role", description="Cluster Autoscaler: size this cluster's managed node groups",
            cluster_arn=cluster.cluster_arn, namespace=NAMESPACE, service_account=SERVICE_ACCOUNT)
        self.role.add_to_policy(iam.PolicyStatement(
            sid="Describe", actions=list(_READ_ACTIONS), resources=["*"]))
        self.role.add_to_policy(iam.PolicyStatement(
            sid="DescribeOwnNodegroups", actions=["eks:DescribeNodegroup"],
            resources=[g.nodegroup.nodegroup_arn for g in self.node_groups]))
        self.role.add_to_policy(iam.PolicyStatement(
            sid="ScaleOwnNodegroups", actions=list(MUTATING_ACTIONS),
            resources=[f"arn:{Aws.PARTITION}:autoscaling:{Aws.REGION}:{Aws.ACCOUNT_ID}:autoScalingGroup:*:"
                       "autoScalingGroupName/eks-*"],
            conditions={"StringEquals": {f"aws:ResourceTag/{CLUSTER_TAG}": cluster.cluster_name},
                        "Null": {f"aws:ResourceTag/{DISCOVERY_TAG}": "false"}}))
        self.pod_identity = eks.CfnPodIdentityAssociation(
            self, "PodIdentity", cluster_name=cluster.cluster_name, namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT, role_arn=self.role.role_arn)
        self.priorities = expander_priorities(self.node_groups, region=region, prices=prices)
        self.values = chart_values(cluster_name=cluster.cluster_name, region=region,
                                   image_tag=addons.cluster_autoscaler_image, priorities=self.priorities,
                                   node_selector=node_selector or {PROCESSOR_LABEL: "system"})
        self.chart = cluster.add_helm_chart(
            "ClusterAutoscalerChart",
            chart="cluster-autoscaler",
            release=RELEASE,
            repository=addons.cluster_autoscaler_repository,
            version=addons.cluster_autoscaler_chart,
            namespace=NAMESPACE,
            wait=True,
            timeout=Duration.minutes(10),
            values=self.values,
        )
        # Pods admitted before their association exists never get credentials (the Pod Identity webhook mutates
        # pods at admission only); the role's policy must exist before the first scaling call.
        self.chart.node.add_dependency(self.pod_identity)
        policy = self.role.node.try_find_child("DefaultPolicy")
        if policy is not None:
            self.chart.node.add_dependency(policy)


def chart_values(*, cluster_name: str, region: str, image_tag: str, priorities: Mapping[str, Sequence[str]],
                 node_selector: Mapping[str, str]) -> dict[str, Any]:
    """Values for the cluster-autoscaler chart (kubernetes/autoscaler chart 9.59.0, values.yaml)."""
    extra_args: dict[str, Any] = {
        "expander": EXPANDER,
        "balance-similar-node-groups": True,
        "scale-down-unneeded-time": SCALE_DOWN_UNNEEDED,
        "scale-down-delay-after-add": SCALE_DOWN_DELAY_AFTER_ADD,
        "max-node-provision-time": MAX_NODE_PROVISION_TIME,
        # The chart keeps what precedes the first "_" of a key as the flag: repeated flags get suffixes.
        **{f"balancing-ignore-label_{i}": label for i, label in enumerate(BALANCING_IGNORED_LABELS, 1)},
    }
    return {
        "cloudProvider": "aws",
        "awsRegion": region,
        "autoDiscovery": {"clusterName": cluster_name},
        "image": {"tag": image_tag},
        "rbac": {"serviceAccount": {"create": True, "name": SERVICE_ACCOUNT}},
        "extraArgs": extra_args,
        "expanderPriorities": {k: list(v) for k, v in priorities.items()},
        "nodeSelector": dict(node_selector),
        "resources": RESOURCES.to_dict(),
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containerSecurityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                     "capabilities": {"drop": ["ALL"]}},
    }

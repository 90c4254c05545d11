"""One EKS managed node group for one processor family, hardened the same way for every family."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from aws_cdk import Tags
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from eks_inference.config import CapacityType, ConfigError, NodeGroupSpec, Processor
from eks_inference.constructs.node_count import NodeCount
from eks_inference.tables.instance_types import INSTANCE_TYPES

PROCESSOR_LABEL = "eks-inference/processor"
"""Node label naming the processor of a node; RayService worker groups select on it."""

NEURON_TAINT_KEY = "aws.amazon.com/neuron"
GPU_TAINT_KEY = "nvidia.com/gpu"
NEURON_CORE = "aws.amazon.com/neuroncore"
NEURON_DEVICE = "aws.amazon.com/neuron"
NVIDIA_GPU = "nvidia.com/gpu"
NEURON_CORES_PER_DEVICE = 2
"""An Inferentia2 device holds two NeuronCores (inf2.xlarge: one device, two cores)."""
TEMPLATE_RESOURCE_TAG = "k8s.io/cluster-autoscaler/node-template/resources/"
"""Prefix of node-group tags the Cluster Autoscaler (>= 1.28) reads, through eks:DescribeNodegroup, for the
extended resources of a node it has not seen yet (kubernetes/autoscaler cluster-autoscaler/cloudprovider/aws/
aws_manager.go, buildNodeFromTemplate and extractAllocatableResourcesFromTags)."""

_AMI_TYPES: dict[tuple[str, str], eks.NodegroupAmiType] = {
    ("system", "amd64"): eks.NodegroupAmiType.AL2023_X86_64_STANDARD,
    ("system", "arm64"): eks.NodegroupAmiType.AL2023_ARM_64_STANDARD,
    ("graviton", "arm64"): eks.NodegroupAmiType.AL2023_ARM_64_STANDARD,
    ("cpu", "amd64"): eks.NodegroupAmiType.AL2023_X86_64_STANDARD,
    ("inferentia", "amd64"): eks.NodegroupAmiType.AL2023_X86_64_NEURON,
    ("gpu", "amd64"): eks.NodegroupAmiType.AL2023_X86_64_NVIDIA,
}


def ami_type_for(spec: NodeGroupSpec) -> eks.NodegroupAmiType:
    """The AMI type is explicit: the one CDK infers from instance types is wrong for inf2 and Graviton."""
    try:
        return _AMI_TYPES[(spec.processor_label, spec.architecture)]
    except KeyError:
        raise ConfigError(
            f"node group {spec.name!r}: no EKS AMI for processor {spec.processor_label} on {spec.architecture}; "
            "pick instance types of the processor's own architecture"
        ) from None


def taints_for(spec: NodeGroupSpec) -> list[eks.TaintSpec]:
    """Accelerator nodes repel everything that does not ask for the accelerator."""
    if spec.processor is Processor.INFERENTIA:
        return [eks.TaintSpec(key=NEURON_TAINT_KEY, value="true", effect=eks.TaintEffect.NO_SCHEDULE)]
    if spec.processor is Processor.GPU:
        return [eks.TaintSpec(key=GPU_TAINT_KEY, value="true", effect=eks.TaintEffect.NO_SCHEDULE)]
    return []


def template_resources(spec: NodeGroupSpec) -> dict[str, int]:
    """The device counts a node of this group advertises once its device plugin runs, which the Cluster Autoscaler
    cannot know for a group it has never seen a node of (it knows vCPUs, memory and NVIDIA GPUs from the instance
    type, nothing about Neuron). With several instance types, the least of them: a pod that fits it fits all."""
    types = [INSTANCE_TYPES[t] for t in spec.instance_types]
    out: dict[str, int] = {}
    if spec.processor is Processor.INFERENTIA:
        cores = min(t.neuron_cores for t in types)
        out[NEURON_CORE] = cores
        out[NEURON_DEVICE] = cores // NEURON_CORES_PER_DEVICE
    elif spec.processor is Processor.GPU:
        out[NVIDIA_GPU] = min(t.gpus for t in types)
    return out


def autoscaler_tags(spec: NodeGroupSpec) -> dict[str, str]:
    """Node-group tags that let the Cluster Autoscaler build this group's template node while it has no node.

    Labels and taints need no tag: the autoscaler reads them from the node group itself (eks:DescribeNodegroup,
    since 1.24), which is why they are set on the node group rather than in the launch template. The tags stay on
    the node group (EKS copies none of them to the Auto Scaling group); the autoscaler reads them there too.
    """
    return {f"{TEMPLATE_RESOURCE_TAG}{name}": str(count) for name, count in sorted(template_resources(spec).items())}


def nodegroup_name(spec: NodeGroupSpec, ami_type: str) -> str:
    """``<name>-<hash>``: a name the Cluster Autoscaler's priority list can match (EKS names the group's Auto
    Scaling group ``eks-<node group name>-<uuid>``), that changes exactly when a create-only property does.

    AWS::EKS::Nodegroup replaces the group when its instance types, capacity type or AMI type change, and
    CloudFormation cannot replace a resource whose custom name stays the same; the hash of those properties gives
    the replacement a new name.
    """
    key = json.dumps([list(spec.instance_types), spec.capacity_type.value, ami_type])
    return f"{spec.name}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def reservation_launch_data(spec: NodeGroupSpec) -> dict[str, Any]:
    """Launch-template fields that put the group's nodes into its capacity reservation.

    An On-Demand Capacity Reservation: ``CapacityReservationSpecification.CapacityReservationTarget`` names it, and
    the group stays ON_DEMAND (a launch beyond the reservation falls back to On-Demand capacity). A Capacity Block
    for ML, as the EKS user guide's "Create a managed node group with Capacity Blocks for ML" sets it: the same
    target, ``InstanceMarketOptions.MarketType: capacity-block``, the instance type in the launch template, and the
    node group's capacity type CAPACITY_BLOCK.
    """
    if spec.capacity_reservation_id is None:
        return {}
    out: dict[str, Any] = {"capacity_reservation_specification":
                              ec2.CfnLaunchTemplate.CapacityReservationSpecificationProperty(
                                  capacity_reservation_target=ec2.CfnLaunchTemplate.CapacityReservationTargetProperty(
                                      capacity_reservation_id=spec.capacity_reservation_id))}
    if spec.capacity_type is CapacityType.CAPACITY_BLOCK:
        out["instance_market_options"] = ec2.CfnLaunchTemplate.InstanceMarketOptionsProperty(
            market_type="capacity-block")
        out["instance_type"] = spec.instance_types[0]
    return out


def node_role(scope: Construct, construct_id: str) -> iam.Role:
    """The instance role every node group shares, with only what a kubelet needs.

    - AmazonEKSWorkerNodePolicy: the kubelet describes itself and joins the cluster.
    - AmazonEC2ContainerRegistryPullOnly: pull images (narrower than ReadOnly: no list/describe).
    - AmazonEKS_CNI_Policy: the VPC CNI assigns pod IPs with the node's credentials.
    No S3 or other data access: pods get theirs through EKS Pod Identity, and IMDSv2 with a hop limit
    of 1 keeps pods from borrowing the node's credentials.
    """
    return iam.Role(
        scope,
        construct_id,
        assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
        description="EKS worker nodes of eks-inference: join the cluster, pull images, run the VPC CNI",
        managed_policies=[
            iam.ManagedPolicy.from_aws_managed_policy_name("AmazonEKSWorkerNodePolicy"),
            iam.ManagedPolicy.from_aws_managed_policy_name("AmazonEC2ContainerRegistryPullOnly"),
            iam.ManagedPolicy.from_aws_managed_policy_name("AmazonEKS_CNI_Policy"),
        ],
    )


class ProcessorNodeGroup(Construct):
    """A managed node group for one processor, spread over the cluster's private subnets.

    Every node: IMDSv2 required (hop limit 1, so containers cannot reach the node's credentials),
    an encrypted gp3 root volume, the label ``eks-inference/processor=<processor>``, and for
    accelerators a NoSchedule taint so only pods that request the accelerator land there.

    Sized by the Cluster Autoscaler between ``min_size`` and ``max_size``: the group carries a name the
    autoscaler's priority list can match (:func:`nodegroup_name`) and, for accelerators, the node-template tags
    that let it scale the group up from zero nodes (:func:`autoscaler_tags`).

    Day two: a deploy leaves the running count alone. ``DesiredSize`` is a :class:`NodeCount` (``self.node_count``):
    the count the group runs, moved into new bounds only where it lies outside them, or ``desired_size`` (default
    ``min_size``) for a group being created; a constant would reset the group at every change of its bounds
    (:mod:`eks_inference.constructs.node_count` says why). ``ForceUpdateEnabled`` is off: when EKS replaces nodes
    (a launch template or AMI release change) and a PodDisruptionBudget keeps a Ray worker from being evicted for
    15 minutes, the update fails with ``PodEvictionFailure`` rather than evicting the worker past its budget,
    which would take a model's last ready replica down; docs/scaling.md says how to go on from there.

    :param cluster: the ``aws_eks_v2`` cluster to join.
    :param spec: the validated :class:`NodeGroupSpec` (instance types, sizes, capacity type).
    :param role: node instance role; default a new minimal role from :func:`node_role`.
    :param subnets: where nodes run; default the cluster VPC's private subnets in every AZ.
    :param labels: node labels; default ``eks-inference/processor=<processor>``. A group for other work (the
        load-test clients) names its own, and the Cluster Autoscaler's template node carries them.
    :param taints: node taints; default :func:`taints_for` the processor.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        spec: NodeGroupSpec,
        role: iam.IRole | None = None,
        subnets: ec2.SubnetSelection | None = None,
        labels: Mapping[str, str] | None = None,
        taints: Sequence[eks.TaintSpec] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if not spec.enabled:
            raise ConfigError(f"node group {spec.name!r} is disabled; skip it rather than building it")
        self.spec = spec
        self.ami_type = ami_type_for(spec)
        self.role = role or node_role(self, "NodeRole")
        self.labels = dict(labels) if labels is not None else {PROCESSOR_LABEL: spec.processor_label}
        self.taints = list(taints) if taints is not None else taints_for(spec)
        kind = self.labels.get(PROCESSOR_LABEL, spec.processor_label)

        self.launch_template = ec2.CfnLaunchTemplate(
            self,
            "LaunchTemplate",
            launch_template_data=ec2.CfnLaunchTemplate.LaunchTemplateDataProperty(
                metadata_options=ec2.CfnLaunchTemplate.MetadataOptionsProperty(
                    http_endpoint="enabled",
                    http_tokens="required",
                    http_put_response_hop_limit=1,
                ),
                block_device_mappings=[
                    ec2.CfnLaunchTemplate.BlockDeviceMappingProperty(
                        device_name="/dev/xvda",
                        ebs=ec2.CfnLaunchTemplate.EbsProperty(
                            volume_size=spec.disk_size_gib,
                            volume_type="gp3",
                            encrypted=True,
                            delete_on_termination=True,
                        ),
                    )
                ],
                tag_specifications=[
                    ec2.CfnLaunchTemplate.TagSpecificationProperty(
                        resource_type="instance",
                        tags=[
                            {"key": "Name", "value": f"eks-inference-{spec.name}"},
                            {"key": PROCESSOR_LABEL, "value": kind},
                        ],
                    )
                ],
                **reservation_launch_data(spec),
            ),
        )
        block = spec.capacity_type is CapacityType.CAPACITY_BLOCK
        self.nodegroup_name = nodegroup_name(spec, self.ami_type.value)
        self.autoscaler_tags = autoscaler_tags(spec)
        self.node_count = NodeCount(
            self, "NodeCount", cluster_name=cluster.cluster_name, nodegroup_name=self.nodegroup_name,
            min_size=spec.min_size, max_size=spec.max_size,
            initial_size=spec.desired_size if spec.desired_size is not None else spec.min_size)
        self.nodegroup = eks.Nodegroup(
            self,
            "Nodegroup",
            cluster=cluster,
            nodegroup_name=self.nodegroup_name,
            tags=self.autoscaler_tags or None,
            # a Capacity Block's type is the launch template's (EKS refuses it in both places)
            instance_types=None if block else [ec2.InstanceType(t) for t in spec.instance_types],
            ami_type=self.ami_type,
            release_version=spec.ami_release_version,
            capacity_type=eks.CapacityType(spec.capacity_type.value),
            min_size=spec.min_size,
            max_size=spec.max_size,
            desired_size=self.node_count.size,
            force_update=False,
            labels=self.labels,
            taints=self.taints,
            node_role=self.role,
            subnets=subnets or ec2.SubnetSelection(
                subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS,
                availability_zones=list(spec.availability_zones) if spec.availability_zones else None),
            launch_template_spec=eks.LaunchTemplateSpec(
                id=self.launch_template.ref, version=self.launch_template.attr_latest_version_number
            ),
            enable_node_auto_repair=True,
        )
        Tags.of(self).add(PROCESSOR_LABEL, kind)

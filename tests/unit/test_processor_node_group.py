"""ProcessorNodeGroup in a bare stack: hardened launch template, AMI, labels and taints per processor, the name and
tags the Cluster Autoscaler reads, sizes, role and subnets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import pytest
from aws_cdk import App, Environment, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Match, Template

from eks_inference.config import CapacityType, ConfigError, NodeGroupSpec, Processor
from eks_inference.constructs.node_count import HANDLER
from eks_inference.constructs.processor_node_group import ProcessorNodeGroup, node_role, nodegroup_name

RESOURCES_TAG = "k8s.io/cluster-autoscaler/node-template/resources/"
INFERENTIA = NodeGroupSpec(name="inferentia", processor=Processor.INFERENTIA,
                           instance_types=("inf2.8xlarge", "inf2.xlarge"), max_size=3, disk_size_gib=200)
GPU = NodeGroupSpec(name="gpu-spot", processor=Processor.GPU, instance_types=("g6.xlarge",), min_size=1, max_size=4,
                    desired_size=2, capacity_type=CapacityType.SPOT)
SYSTEM = NodeGroupSpec(name="system", processor=None, instance_types=("m7g.large",), min_size=1)


def bare_cluster(stack: Stack, vpc: ec2.IVpc) -> eks.ICluster:
    """A cluster without a kubectl provider: node groups need none, and the kubectl layer is most of a synth."""
    cluster = eks.Cluster(stack, "Cluster", version=eks.KubernetesVersion.V1_36, vpc=vpc,
                          default_capacity_type=eks.DefaultCapacityType.NODEGROUP, default_capacity=0)
    return cast(eks.ICluster, cluster)  # jsii's Cluster is an ICluster; mypy cannot see it through the protocol


@dataclass
class Built:
    stack: Stack
    template: Template
    groups: dict[str, ProcessorNodeGroup]
    shared_role: iam.Role

    def props(self, name: str) -> Mapping[str, Any]:
        (found,) = [r["Properties"] for r in self.template.find_resources("AWS::EKS::Nodegroup").values()
                    if r["Properties"]["NodegroupName"] == self.groups[name].nodegroup_name]
        return found

    def logical_id(self, construct: Any) -> str:
        return str(self.stack.get_logical_id(construct.node.default_child or construct))


@pytest.fixture(scope="module")
def built() -> Built:
    """One synth: a cluster without a kubectl provider (node groups need none), an inf2 group with its own role,
    a Spot GPU group and an arm64 system group sharing one role."""
    stack = Stack(App(), "Bare", env=Environment(account="111122223333", region="us-west-2"))
    vpc = ec2.Vpc(stack, "Vpc", availability_zones=["us-west-2a", "us-west-2b"])
    cluster = bare_cluster(stack, vpc)
    shared = node_role(stack, "SharedNodeRole")
    groups = {
        "inferentia": ProcessorNodeGroup(stack, "Inferentia", cluster=cluster, spec=INFERENTIA),
        "gpu-spot": ProcessorNodeGroup(stack, "GpuSpot", cluster=cluster, spec=GPU, role=shared),
        "system": ProcessorNodeGroup(stack, "System", cluster=cluster, spec=SYSTEM, role=shared),
    }
    return Built(stack, Template.from_stack(stack), groups, shared)


def test_every_node_requires_imdsv2_and_an_encrypted_gp3_root_volume(built: Built) -> None:
    """GIVEN any group WHEN synthesized THEN its launch template requires IMDSv2 with one hop (containers cannot
    reach the node's credentials), an encrypted gp3 root volume of the spec's size, and tags its instances."""
    lt = built.groups["inferentia"].launch_template
    built.template.has_resource("AWS::EC2::LaunchTemplate", {"Properties": {"LaunchTemplateData": Match.object_like({
        "MetadataOptions": {"HttpEndpoint": "enabled", "HttpTokens": "required", "HttpPutResponseHopLimit": 1},
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {
            "VolumeSize": 200, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True}}],
        "TagSpecifications": [{"ResourceType": "instance", "Tags": Match.array_with([
            {"Key": "Name", "Value": "eks-inference-inferentia"},
            {"Key": "eks-inference/processor", "Value": "inferentia"}])}],
    })}})
    props = built.props("inferentia")
    assert props["LaunchTemplate"] == {"Id": {"Ref": built.logical_id(lt)},
                                       "Version": {"Fn::GetAtt": [built.logical_id(lt), "LatestVersionNumber"]}}
    assert props["NodeRepairConfig"] == {"Enabled": True}


@pytest.mark.parametrize(("name", "ami", "label", "taints"), [
    ("inferentia", "AL2023_x86_64_NEURON", "inferentia",
     [{"Key": "aws.amazon.com/neuron", "Value": "true", "Effect": "NO_SCHEDULE"}]),
    ("gpu-spot", "AL2023_x86_64_NVIDIA", "gpu", [{"Key": "nvidia.com/gpu", "Value": "true", "Effect": "NO_SCHEDULE"}]),
    ("system", "AL2023_ARM_64_STANDARD", "system", []),
])
def test_ami_label_and_taints_follow_the_processor(built: Built, name: str, ami: str, label: str,
                                                   taints: list[dict[str, str]]) -> None:
    """GIVEN a group of a processor WHEN synthesized THEN its AMI type is the processor's (never the inferred one),
    its nodes carry the processor label, and accelerator nodes repel pods that do not ask for the accelerator."""
    props = built.props(name)
    assert props["AmiType"] == ami
    assert props["Labels"] == {"eks-inference/processor": label}
    assert props["Taints"] == taints


def test_name_and_tags_let_the_autoscaler_match_the_group_and_scale_it_from_zero(built: Built) -> None:
    """GIVEN an inf2 group of two instance types WHEN synthesized THEN it is named by the create-only properties'
    hash, and its tags give the Neuron devices of the smaller type (a pod that fits it fits both)."""
    group = built.groups["inferentia"]
    props = built.props("inferentia")
    assert props["NodegroupName"] == nodegroup_name(INFERENTIA, eks.NodegroupAmiType.AL2023_X86_64_NEURON.value)
    assert props["Tags"] == {f"{RESOURCES_TAG}aws.amazon.com/neuroncore": "2",
                             f"{RESOURCES_TAG}aws.amazon.com/neuron": "1", "eks-inference/processor": "inferentia"}
    assert group.autoscaler_tags == {k: v for k, v in props["Tags"].items() if k.startswith(RESOURCES_TAG)}
    gpu_tags = built.props("gpu-spot")["Tags"]
    assert gpu_tags[f"{RESOURCES_TAG}nvidia.com/gpu"] == "1"
    assert not any(k.startswith(RESOURCES_TAG) for k in built.props("system")["Tags"])


@pytest.mark.parametrize(("name", "bounds", "initial", "capacity"), [
    ("inferentia", {"MinSize": 0, "MaxSize": 3}, 0, "ON_DEMAND"),
    ("gpu-spot", {"MinSize": 1, "MaxSize": 4}, 2, "SPOT"),
])
def test_sizes_and_capacity_type_come_from_the_spec(built: Built, name: str, bounds: dict[str, int], initial: int,
                                                    capacity: str) -> None:
    """GIVEN a spec with or without desired_size WHEN synthesized THEN the group has the spec's bounds, its
    DesiredSize is its NodeCount (the running count on later deploys), which starts a new group at desired_size, or
    at min_size when none is given (aws_eks_v2 would otherwise pick its own), and it has the spec's capacity type."""
    props = built.props(name)
    count = built.groups[name].node_count
    assert props["ScalingConfig"] == {**bounds, "DesiredSize": {"Fn::GetAtt": [built.logical_id(count.resource),
                                                                               "Size"]}}
    (count_props,) = [r["Properties"] for k, r in built.template.find_resources("Custom::NodeCount").items()
                      if k == built.logical_id(count.resource)]
    assert {k: v for k, v in count_props.items() if k != "ServiceToken" and k != "ClusterName"} == {
        **bounds, "InitialSize": initial, "NodegroupName": built.groups[name].nodegroup_name}
    assert props["CapacityType"] == capacity
    assert props["InstanceTypes"] == list(built.groups[name].spec.instance_types)


def test_one_node_count_function_serves_every_group_and_reads_only_them(built: Built) -> None:
    """GIVEN three groups WHEN synthesized THEN one function (the handler's source inlined, within CloudFormation's
    4096-character ZipFile limit) answers the three NodeCounts, each resource waits for the function's policy, and
    the policy may describe exactly those node groups and (no resource-level permission exists) Auto Scaling
    groups."""
    (fn,) = built.template.find_resources("AWS::Lambda::Function").values()
    code = fn["Properties"]["Code"]["ZipFile"]
    assert code == HANDLER.read_text() and len(code) <= 4096
    assert fn["Properties"]["Handler"] == "index.handler" and fn["Properties"]["Runtime"].startswith("python3.")
    counts = built.template.find_resources("Custom::NodeCount")
    assert len(counts) == 3
    (policy_id, policy), = [(k, r) for k, r in built.template.find_resources("AWS::IAM::Policy").items()
                            if "NodeCountProvider" in k]
    assert all(policy_id in r["DependsOn"] for r in counts.values())
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    described = sorted(json.dumps(s["Resource"]) for s in statements if s["Action"] == "eks:DescribeNodegroup")
    assert len(described) == 3 and all(f"/{g.nodegroup_name}/*" in d
                                       for g, d in zip(sorted(built.groups.values(), key=lambda g: g.nodegroup_name),
                                                       sorted(described, key=lambda d: d.split(":nodegroup/")[-1]),
                                                       strict=True))
    assert [s["Resource"] for s in statements if s["Action"] == "autoscaling:DescribeAutoScalingGroups"] == ["*"]
    assert {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])} == {
        "eks:DescribeNodegroup", "autoscaling:DescribeAutoScalingGroups", "logs:CreateLogStream", "logs:PutLogEvents"}


def test_a_node_update_never_evicts_past_a_disruption_budget(built: Built) -> None:
    """GIVEN any group WHEN synthesized THEN ForceUpdateEnabled is off (aws_eks_v2 turns it on): an update that a
    PodDisruptionBudget holds up fails instead of evicting a Ray worker past its budget."""
    assert all(built.props(name)["ForceUpdateEnabled"] is False for name in built.groups)


def test_a_group_without_a_role_gets_its_own_minimal_one(built: Built) -> None:
    """GIVEN no role WHEN the group is built THEN it makes a node role with only the kubelet's managed policies;
    groups given a role share it."""
    own = built.groups["inferentia"].role
    assert own is not built.shared_role
    assert built.props("inferentia")["NodeRole"] == {"Fn::GetAtt": [built.logical_id(own), "Arn"]}
    shared = {"Fn::GetAtt": [built.logical_id(built.shared_role), "Arn"]}
    assert built.props("gpu-spot")["NodeRole"] == built.props("system")["NodeRole"] == shared
    role = built.template.find_resources("AWS::IAM::Role")[built.logical_id(own)]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    policies = [p["Fn::Join"][1][-1].rsplit("/", 1)[1] for p in role["ManagedPolicyArns"]]
    assert sorted(policies) == ["AmazonEC2ContainerRegistryPullOnly", "AmazonEKSWorkerNodePolicy",
                                "AmazonEKS_CNI_Policy"]
    assert "Policies" not in role


def test_nodes_go_to_the_private_subnets_by_default(built: Built) -> None:
    """GIVEN no subnets WHEN synthesized THEN every group spans the VPC's private subnets, one per zone."""
    vpc = built.stack.node.find_child("Vpc")
    assert isinstance(vpc, ec2.Vpc)
    private = [{"Ref": built.logical_id(s)} for s in vpc.private_subnets]
    for name in built.groups:
        assert built.props(name)["Subnets"] == private


def test_a_disabled_group_is_refused() -> None:
    """GIVEN a disabled spec WHEN a group is built from it THEN a ConfigError says to skip it."""
    stack = Stack(App(), "Disabled")
    cluster = bare_cluster(stack, ec2.Vpc(stack, "Vpc", availability_zones=["us-west-2a"]))
    spec = NodeGroupSpec(name="gpu", processor=Processor.GPU, instance_types=("g6.xlarge",), enabled=False)
    with pytest.raises(ConfigError, match=r"^node group 'gpu' is disabled; skip it rather than building it$"):
        ProcessorNodeGroup(stack, "Gpu", cluster=cluster, spec=spec)

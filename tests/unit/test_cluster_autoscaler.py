"""ClusterAutoscaler: the pinned chart and its values, a role scoped to this cluster's groups, and node groups the
autoscaler can scale from zero and order by price."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk.assertions import Template

from eks_inference.config import KUBERNETES_VERSION, CapacityType, ConfigError, NodeGroupSpec, Processor
from eks_inference.constructs.cluster_autoscaler import (
    DISCOVERY_TAG,
    MUTATING_ACTIONS,
    asg_name_pattern,
    check_image_minor,
    expander_priorities,
)
from eks_inference.constructs.processor_node_group import autoscaler_tags, nodegroup_name
from eks_inference.tables.prices import DEFAULT_PRICES
from tests.conftest import Assembly
from tests.system.cfn import resolve
from tests.system.nodegroup_update import initial_size

RESOURCES_TAG = "k8s.io/cluster-autoscaler/node-template/resources/"


def template(assemblies: dict[str, Assembly], env_name: str = "dev") -> dict[str, Any]:
    return assemblies[env_name].template("-Cluster")


def resources_of(t: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in t["Resources"].items() if v["Type"] == type_}


def chart_values(t: dict[str, Any]) -> dict[str, Any]:
    (chart,) = [r["Properties"] for r in resources_of(t, "Custom::AWSCDK-EKS-HelmChart").values()
                if r["Properties"]["Chart"] == "cluster-autoscaler"]
    return dict(json.loads(resolve(chart["Values"])))


def cluster_ref(t: dict[str, Any]) -> str:
    (cluster_id,) = resources_of(t, "AWS::EKS::Cluster")
    return cluster_id


def priority_of(priorities: dict[str, list[str]], asg_name: str) -> int:
    """The priority expander's reading (cluster-autoscaler/expander/priority): a group belongs to the highest
    priority any of whose regular expressions matches its Auto Scaling group's name."""
    return max(int(k) for k, patterns in priorities.items() if any(re.fullmatch(p, asg_name) for p in patterns))


def groups(t: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["Properties"]["Labels"]["eks-inference/processor"]: r["Properties"]
            for r in resources_of(t, "AWS::EKS::Nodegroup").values()}


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_chart_values_discover_this_cluster_and_prefer_cheaper_groups(env_name: str,
                                                                       assemblies: dict[str, Assembly]) -> None:
    t = template(assemblies, env_name)
    v = chart_values(t)
    assert v["cloudProvider"] == "aws"
    assert v["autoDiscovery"] == {"clusterName": f"ref-{cluster_ref(t).lower()}"}  # the chart's default tags
    assert v["awsRegion"] == {"dev": "us-west-2", "prod": "us-east-1"}[env_name]  # no IMDS lookup
    assert v["image"]["tag"].startswith(f"v{KUBERNETES_VERSION}.")
    assert v["rbac"]["serviceAccount"] == {"create": True, "name": "cluster-autoscaler"}
    args = v["extraArgs"]
    assert args["expander"] == "priority,least-waste"  # price is not implemented on AWS
    assert args["balance-similar-node-groups"] is True
    assert v["nodeSelector"] == {"eks-inference/processor": "system"}
    # Priorities by the price table: the system group's m7i ($0.10/h) above graviton's c7g.2xlarge ($0.29/h) above
    # inferentia's inf2.xlarge ($0.76/h); anything found later only under the catch-all.
    prio = v["expanderPriorities"]
    by_group = {p: priority_of(prio, f"eks-{props['NodegroupName']}-8ec4a1b0-5c1d-4a2e-9f00-0123456789ab")
                for p, props in groups(t).items()}
    assert by_group["system"] > by_group["graviton"] > by_group["inferentia"] > 1
    assert prio["1"] == [".*"]


def test_role_may_only_scale_this_clusters_groups(assemblies: dict[str, Assembly]) -> None:
    t = template(assemblies)
    tmpl = Template.from_json(t)
    roles = tmpl.find_resources("AWS::IAM::Role", {"Properties": {"Description": "Cluster Autoscaler: size this "
                                                                                 "cluster's managed node groups"}})
    (role_id,) = roles
    trust = roles[role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(trust["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
    (policy,) = [p["Properties"]["PolicyDocument"] for p in resources_of(t, "AWS::IAM::Policy").values()
                 if p["Properties"]["Roles"] == [{"Ref": role_id}]]
    cluster = cluster_ref(t)
    for st in policy["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        if set(actions) & set(MUTATING_ACTIONS):
            # Never on * without a condition: only groups tagged with this cluster's name (and CA's discovery tag)
            assert sorted(actions) == sorted(MUTATING_ACTIONS)
            assert st["Condition"]["StringEquals"] == {"aws:ResourceTag/eks:cluster-name": {"Ref": cluster}}
            assert st["Condition"]["Null"] == {f"aws:ResourceTag/{DISCOVERY_TAG}": "false"}
            assert resolve(st["Resource"]).endswith(":autoScalingGroup:*:autoScalingGroupName/eks-*")
        elif "eks:DescribeNodegroup" in actions:
            ngs = set(resources_of(t, "AWS::EKS::Nodegroup"))
            assert {r["Fn::GetAtt"][0] for r in st["Resource"]} == ngs and actions == ["eks:DescribeNodegroup"]
        else:
            assert all(a.split(":")[1].startswith(("Describe", "GetInstanceTypes")) for a in actions), actions
    (assoc,) = [a["Properties"] for a in resources_of(t, "AWS::EKS::PodIdentityAssociation").values()
                if a["Properties"]["ServiceAccount"] == "cluster-autoscaler"]  # the front door's controller has one
    assert (assoc["Namespace"], assoc["ServiceAccount"]) == ("kube-system", "cluster-autoscaler")
    assert assoc["RoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}


def test_chart_waits_for_its_credentials(assemblies: dict[str, Assembly]) -> None:
    """Pods admitted before their Pod Identity association exists never get credentials."""
    t = template(assemblies)
    (chart_id,) = [k for k, r in resources_of(t, "Custom::AWSCDK-EKS-HelmChart").items()
                   if r["Properties"]["Chart"] == "cluster-autoscaler"]
    (assoc_id,) = [k for k, r in resources_of(t, "AWS::EKS::PodIdentityAssociation").items()
                   if r["Properties"]["ServiceAccount"] == "cluster-autoscaler"]
    assert assoc_id in t["Resources"][chart_id]["DependsOn"]


def test_accelerator_groups_can_scale_from_zero(assemblies: dict[str, Assembly]) -> None:
    """What the autoscaler needs to build a template node for a group with no node: labels and valued taints on
    the node group (eks:DescribeNodegroup), device counts in its tags, and min/desired 0 written out (aws_eks_v2
    would otherwise default min_size to 1)."""
    ng = groups(template(assemblies))
    inf = ng["inferentia"]
    assert (inf["ScalingConfig"]["MinSize"], initial_size(template(assemblies), inf)) == (0, 0)
    assert inf["Tags"][f"{RESOURCES_TAG}aws.amazon.com/neuroncore"] == "2"  # one inf2.xlarge: 1 device, 2 cores
    assert inf["Tags"][f"{RESOURCES_TAG}aws.amazon.com/neuron"] == "1"
    assert inf["Labels"] == {"eks-inference/processor": "inferentia"}
    assert all(taint.get("Value") for taint in inf["Taints"])  # the autoscaler skips taints without a value
    assert not any(k.startswith(RESOURCES_TAG) for k in ng["graviton"]["Tags"])
    gpu = NodeGroupSpec(name="gpu", processor=Processor.GPU, instance_types=("g6.xlarge", "g5.12xlarge"))
    assert autoscaler_tags(gpu) == {f"{RESOURCES_TAG}nvidia.com/gpu": "1"}  # the least of its types


def test_node_group_names_are_stable_until_a_create_only_property_changes() -> None:
    spec = NodeGroupSpec(name="graviton", processor=Processor.GRAVITON, instance_types=("c7g.2xlarge",), max_size=4)
    name = nodegroup_name(spec, "AL2023_ARM_64_STANDARD")
    assert re.fullmatch(r"graviton-[0-9a-f]{8}", name)
    bigger = NodeGroupSpec(name="graviton", processor=Processor.GRAVITON, instance_types=("c7g.2xlarge",), max_size=9)
    assert nodegroup_name(bigger, "AL2023_ARM_64_STANDARD") == name  # scaling is an in-place update
    other = NodeGroupSpec(name="graviton", processor=Processor.GRAVITON, instance_types=("c7g.4xlarge",))
    assert nodegroup_name(other, "AL2023_ARM_64_STANDARD") != name  # a replacement gets a new name
    assert re.fullmatch(asg_name_pattern(name), f"eks-{name}-58c77686-3098-7837-9889-29a8e3f1b2c4")
    assert not re.fullmatch(asg_name_pattern(name), "eks-graviton-spot-0d4f1645-58c77686-3098-7837")


def test_priorities_follow_the_price_table() -> None:
    rows = [("cheap-11111111", "c7g.xlarge", CapacityType.ON_DEMAND),
            ("spot-22222222", "c7g.xlarge", CapacityType.SPOT),
            ("dear-33333333", "inf2.xlarge", CapacityType.ON_DEMAND),
            ("twin-44444444", "inf2.xlarge", CapacityType.ON_DEMAND),
            ("unpriced-55555555", "t3.nano", CapacityType.ON_DEMAND)]
    prio = expander_priorities(rows, region="us-east-1", prices=DEFAULT_PRICES)
    assert prio == {"1": [".*"], "30": [asg_name_pattern("spot-22222222")], "20": [asg_name_pattern("cheap-11111111")],
                    "10": sorted([asg_name_pattern("dear-33333333"), asg_name_pattern("twin-44444444")])}


def test_autoscaler_of_another_minor_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^addons.cluster_autoscaler_image: 'v1.35.0' is not a Cluster Autoscaler "
                                          rf"for Kubernetes {KUBERNETES_VERSION}; use the newest"):
        check_image_minor("v1.35.0")

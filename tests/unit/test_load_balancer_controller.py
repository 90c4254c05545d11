"""LoadBalancerController through InferenceCluster(front_door=True), in a bare stack: the Gateway API CRDs before the
pinned chart, the controller's documented IAM policy through Pod Identity, one install however often it is asked."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import pytest
from aws_cdk import App, Environment, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk.assertions import Match, Template

from eks_inference.config import AddonVersions, ConfigError, NodeGroupSpec
from eks_inference.constructs.inference_cluster import InferenceCluster
from eks_inference.constructs.load_balancer_controller import (
    IAM_POLICY_FILE,
    NAMESPACE,
    SERVICE_ACCOUNT,
    LoadBalancerController,
)
from eks_inference.k8s.gateway_api import CRD_KINDS

SYSTEM = NodeGroupSpec(name="system", processor=None, instance_types=("m7i.large",), min_size=1)
HELM = "Custom::AWSCDK-EKS-HelmChart"
MANIFEST = "Custom::AWSCDK-EKS-KubernetesResource"


def _joined(value: Any) -> str:
    """A CloudFormation ``Fn::Join`` of strings and references, each reference written as ``<token>``."""
    if isinstance(value, str):
        return value
    return "".join(p if isinstance(p, str) else "<token>" for p in value["Fn::Join"][1])


@dataclass
class Built:
    stack: Stack
    cluster: InferenceCluster
    template: Template
    again: LoadBalancerController

    def logical_id(self, construct: Any) -> str:
        return str(self.stack.get_logical_id(construct.node.default_child))


@pytest.fixture(scope="module")
def built() -> Built:
    stack = Stack(App(), "Bare", env=Environment(account="111122223333", region="us-west-2"))
    vpc = ec2.Vpc(stack, "Vpc", availability_zones=["us-west-2a", "us-west-2b"])
    ic = InferenceCluster(stack, "InferenceCluster", vpc=vpc, node_groups=[SYSTEM],
                          public_access_cidrs=["203.0.113.0/24"], node_autoscaling=False, front_door=True,
                          cluster_name="eks-inference-test")
    again = ic.add_load_balancer_controller()
    return Built(stack, ic, Template.from_stack(stack), again)


def test_installed_once_and_kept_as_an_attribute(built: Built) -> None:
    assert built.cluster.load_balancer_controller is built.again
    assert len(built.template.find_resources(HELM, {"Properties": {"Chart": "aws-load-balancer-controller"}})) == 1
    assert [p.name for p in built.cluster.system_pods if "load-balancer" in p.name] == [
        "aws-load-balancer-controller 1", "aws-load-balancer-controller 2"]


def test_chart_is_pinned_on_the_system_nodes_with_the_alb_gateway_controller_on(built: Built) -> None:
    addons = AddonVersions()
    (chart,) = built.template.find_resources(HELM, {"Properties": {"Chart": "aws-load-balancer-controller"}}).values()
    props = chart["Properties"]
    assert (props["Version"], props["Repository"], props["Namespace"]) == (
        addons.load_balancer_controller_chart, addons.load_balancer_controller_repository, NAMESPACE)
    values = json.loads(_joined(props["Values"]))
    assert values["clusterName"] == values["vpcId"] == "<token>"  # the cluster's name and VPC, resolved at deploy
    assert values["serviceAccount"] == {"create": True, "name": SERVICE_ACCOUNT}
    assert values["nodeSelector"] == {"eks-inference/processor": "system"}
    assert values["controllerConfig"]["featureGates"] == {"ALBGatewayAPI": True, "NLBGatewayAPI": False}
    assert values["createIngressClassResource"] is False


def test_gateway_api_crds_are_applied_before_the_controller_starts(built: Built) -> None:
    """The controller enables its ALB gateway controller only if the CRDs exist when it starts."""
    lbc = built.cluster.load_balancer_controller
    assert lbc is not None
    crds_id = built.logical_id(lbc.crds)
    (chart,) = built.template.find_resources(HELM, {"Properties": {"Chart": "aws-load-balancer-controller"}}).values()
    assert crds_id in chart["DependsOn"]
    manifest = built.template.find_resources(MANIFEST)[crds_id]["Properties"]["Manifest"]
    text = json.dumps(built.stack.resolve(manifest))
    for kind in CRD_KINDS:
        assert f"{kind}.gateway.networking.k8s.io" in text


def test_role_is_the_documented_policy_through_pod_identity(built: Built) -> None:
    lbc = built.cluster.load_balancer_controller
    assert lbc is not None
    t = built.template
    t.has_resource_properties("AWS::EKS::PodIdentityAssociation", {
        "Namespace": NAMESPACE, "ServiceAccount": SERVICE_ACCOUNT,
        "RoleArn": {"Fn::GetAtt": [built.logical_id(lbc.role), "Arn"]}})
    t.has_resource_properties("AWS::IAM::Role", {"AssumeRolePolicyDocument": {"Statement": [Match.object_like({
        "Principal": {"Service": "pods.eks.amazonaws.com"},
        "Condition": Match.object_like({"StringEquals": Match.object_like({
            "aws:RequestTag/kubernetes-namespace": NAMESPACE,
            "aws:RequestTag/kubernetes-service-account": SERVICE_ACCOUNT})})})]}})
    (policy,) = [r for k, r in t.find_resources("AWS::IAM::Policy").items() if k == built.logical_id(lbc.policy)]
    upstream = json.loads(IAM_POLICY_FILE.read_text())
    def listed(v: Any) -> list[str]:
        return [v] if isinstance(v, str) else list(v)

    assert [(listed(s["Action"]), listed(s["Resource"]), s.get("Condition")) for s in
            policy["Properties"]["PolicyDocument"]["Statement"]] == [
        (listed(s["Action"]), listed(s["Resource"]), s.get("Condition")) for s in upstream["Statement"]]
    assert policy["Properties"]["Roles"] == [{"Ref": built.logical_id(lbc.role)}]


def test_a_gateway_api_release_other_than_the_crds_is_refused() -> None:
    stack = Stack(App(), "Other", env=Environment(account="111122223333", region="us-west-2"))
    vpc = ec2.Vpc(stack, "Vpc", availability_zones=["us-west-2a", "us-west-2b"])
    with pytest.raises(ConfigError, match=r"addons.gateway_api: 'v1.5.0' is not the Gateway API release"):
        InferenceCluster(stack, "InferenceCluster", vpc=vpc, node_groups=[SYSTEM],
                         public_access_cidrs=["203.0.113.0/24"], node_autoscaling=False, front_door=True,
                         addons=replace(AddonVersions(), gateway_api="v1.5.0"))

"""InferenceCluster in a bare stack: what the constructor installs for its configuration, each ``add_*`` method's
chart or add-on, add-ons the configuration did not ask for, a second call to a method, and each validation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from aws_cdk import App, Environment, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk.assertions import Match, Template

from eks_inference.config import (
    KUBERNETES_VERSION,
    AddonVersions,
    ConfigError,
    EndpointAccess,
    LoadTestSpec,
    NodeGroupSpec,
    Processor,
)
from eks_inference.constructs.inference_cluster import NEURON_SCHEDULER_NAME, InferenceCluster
from eks_inference.k8s.load_test_nodes import load_test_node_group

ADDONS = AddonVersions()
SYSTEM = NodeGroupSpec(name="system", processor=None, instance_types=("m7i.large",), min_size=1)
INFERENTIA = NodeGroupSpec(name="inferentia", processor=Processor.INFERENTIA, instance_types=("inf2.xlarge",))
GPU_OFF = NodeGroupSpec(name="gpu", processor=Processor.GPU, instance_types=("g6.xlarge",), enabled=False)
ADD_METHODS = ("add_pod_identity_agent", "add_vpc_cni", "add_kuberay_operator", "add_metrics_server",
               "add_neuron_device_plugin", "add_cluster_autoscaler", "add_nvidia_device_plugin")
HELM = "Custom::AWSCDK-EKS-HelmChart"
LOAD_TEST = load_test_node_group(LoadTestSpec(), 2)


def bare_stack(name: str) -> tuple[Stack, ec2.Vpc]:
    """A stack of its own with a VPC whose zones are given, so that nothing asks AWS for them."""
    stack = Stack(App(), name, env=Environment(account="111122223333", region="us-west-2"))
    vpc = ec2.Vpc(stack, "Vpc", availability_zones=["us-west-2a", "us-west-2b"])
    return stack, vpc


@dataclass
class Built:
    cluster: InferenceCluster
    template: Template
    asked: dict[str, Any]
    """Attributes right after the constructor, before any add-on the configuration did not ask for."""
    pods_asked: list[str]
    first: dict[str, Any]
    again: dict[str, Any]

    def logical_id(self, construct: Any) -> str:
        return str(Stack.of(self.cluster).get_logical_id(construct.node.default_child))

    def chart(self, chart: str) -> tuple[str, Mapping[str, Any]]:
        (found,) = [(k, r) for k, r in self.template.find_resources(HELM).items()
                    if r["Properties"]["Chart"] == chart]
        return found


@pytest.fixture(scope="module")
def built() -> Built:
    """One synth for the module: inf2 and system groups, a disabled GPU group, autoscaling off; then the NVIDIA
    plugin and the Cluster Autoscaler added by hand, and every method called a second time."""
    stack, vpc = bare_stack("Bare")
    ic = InferenceCluster(stack, "InferenceCluster", vpc=vpc, node_groups=[SYSTEM, INFERENTIA, GPU_OFF],
                          public_access_cidrs=["203.0.113.0/24"],
                          admin_role_arn="arn:aws:iam::111122223333:role/Admin", node_autoscaling=False)
    asked = {"neuron": ic.neuron, "nvidia": ic.nvidia, "cluster_autoscaler": ic.cluster_autoscaler}
    pods_asked = [p.name for p in ic.system_pods]
    first: dict[str, Any] = {"add_nvidia_device_plugin": ic.add_nvidia_device_plugin(),
                             "add_cluster_autoscaler": ic.add_cluster_autoscaler()}
    first.update(add_pod_identity_agent=ic.pod_identity_agent, add_vpc_cni=ic.vpc_cni,
                 add_kuberay_operator=ic.kuberay_operator, add_metrics_server=ic.metrics_server,
                 add_neuron_device_plugin=ic.neuron)
    again = {m: getattr(ic, m)() for m in ADD_METHODS}
    return Built(ic, Template.from_stack(stack), asked, pods_asked, first, again)


def test_constructor_installs_what_the_config_asks_for(built: Built) -> None:
    """GIVEN an inf2 group, a disabled GPU group and node_autoscaling off WHEN the cluster is built THEN the Neuron
    chart is installed and neither the NVIDIA plugin nor the Cluster Autoscaler is; the system pods counted are
    those of the operators installed."""
    assert built.asked["neuron"] is not None
    assert built.asked["nvidia"] is None and built.asked["cluster_autoscaler"] is None
    assert built.pods_asked == ["kuberay-operator", "metrics-server", "neuron scheduler extension",
                                "neuron kube-scheduler"]


def test_cluster_encrypts_secrets_logs_everything_and_limits_its_endpoint(built: Built) -> None:
    """GIVEN public-and-private access from one CIDR and an admin role WHEN synthesized THEN the cluster runs the
    project's Kubernetes minor, encrypts secrets with the rotating key it made, logs every control-plane type,
    admits only that CIDR, and the role has a cluster-admin access entry."""
    t = built.template
    (key_id,) = t.find_resources("AWS::KMS::Key", {"Properties": {"EnableKeyRotation": True},
                                                   "DeletionPolicy": "Retain"})
    t.has_resource_properties("AWS::EKS::Cluster", {
        "Version": KUBERNETES_VERSION,
        "EncryptionConfig": [{"Provider": {"KeyArn": {"Fn::GetAtt": [key_id, "Arn"]}}, "Resources": ["secrets"]}],
        "Logging": {"ClusterLogging": {"EnabledTypes": Match.array_equals([
            {"Type": "api"}, {"Type": "audit"}, {"Type": "authenticator"}, {"Type": "controllerManager"},
            {"Type": "scheduler"}])}},
        "ResourcesVpcConfig": Match.object_like({"EndpointPublicAccess": True, "EndpointPrivateAccess": True,
                                                 "PublicAccessCidrs": ["203.0.113.0/24"]}),
    })
    t.has_resource_properties("AWS::EKS::AccessEntry", {
        "PrincipalArn": "arn:aws:iam::111122223333:role/Admin",
        "AccessPolicies": [Match.object_like({"AccessScope": {"Type": "cluster"}})],
    })


def test_one_group_per_enabled_spec_sharing_one_node_role_and_no_default_capacity(built: Built) -> None:
    """GIVEN system, inferentia and a disabled gpu spec WHEN synthesized THEN two managed node groups exist, both
    with the construct's node role, and no default capacity of aws_eks_v2."""
    t = built.template
    groups = t.find_resources("AWS::EKS::Nodegroup")
    assert sorted(r["Properties"]["Labels"]["eks-inference/processor"] for r in groups.values()) == [
        "inferentia", "system"]
    assert set(built.cluster.node_groups) == {"system", "inferentia"}
    role = built.logical_id(built.cluster.node_role)
    assert all(r["Properties"]["NodeRole"] == {"Fn::GetAtt": [role, "Arn"]} for r in groups.values())
    t.resource_count_is("AWS::AutoScaling::AutoScalingGroup", 0)
    assert built.cluster.system_group is built.cluster.node_groups["system"]


@pytest.mark.parametrize(("chart", "version", "repository", "namespace"), [
    ("kuberay-operator", ADDONS.kuberay_operator_chart, ADDONS.kuberay_repository, "kuberay-system"),
    ("metrics-server", ADDONS.metrics_server_chart, ADDONS.metrics_server_repository, "kube-system"),
    ("neuron-helm-chart", ADDONS.neuron_chart, ADDONS.neuron_repository, "kube-system"),
    ("cluster-autoscaler", ADDONS.cluster_autoscaler_chart, ADDONS.cluster_autoscaler_repository, "kube-system"),
])
def test_each_operator_chart_is_pinned_and_waits_for_the_system_nodes(
        built: Built, chart: str, version: str, repository: str, namespace: str) -> None:
    """GIVEN an operator's add_* method WHEN synthesized THEN its chart is the pinned version from the pinned
    repository, and it is installed only after the system group (where it runs) exists."""
    built.template.has_resource_properties(HELM, Match.object_like({
        "Chart": chart, "Version": version, "Repository": repository, "Namespace": namespace}))
    _, resource = built.chart(chart)
    assert built.logical_id(built.cluster.system_group.nodegroup) in resource["DependsOn"]


def test_kuberay_operator_and_metrics_server_run_on_system_nodes(built: Built) -> None:
    """GIVEN add_kuberay_operator and add_metrics_server WHEN synthesized THEN both select the system nodes, and
    the operator waits for its release (RayServices applied after it need its CRD)."""
    for name in ("kuberay-operator", "metrics-server"):
        _, resource = built.chart(name)
        assert json.loads(resource["Properties"]["Values"])["nodeSelector"] == {"eks-inference/processor": "system"}
    assert built.chart("kuberay-operator")[1]["Properties"]["Wait"] is True


def test_neuron_chart_runs_the_device_plugin_and_the_scheduler_of_the_clusters_minor(built: Built) -> None:
    """GIVEN add_neuron_device_plugin WHEN synthesized THEN the device plugin tolerates the Neuron taint and the
    scheduler extension runs a kube-scheduler of the pinned tag under the name pods ask for."""
    values = json.loads(built.chart("neuron-helm-chart")[1]["Properties"]["Values"])
    assert {"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"} in values["devicePlugin"][
        "tolerations"]
    custom = values["scheduler"]["customScheduler"]
    assert custom["fullnameOverride"] == NEURON_SCHEDULER_NAME
    assert custom["image"] == {"tag": ADDONS.neuron_kube_scheduler}
    assert values["npd"] == {"enabled": False}


def test_eks_addons_are_pinned_and_the_cni_enforces_network_policies(built: Built) -> None:
    """GIVEN add_pod_identity_agent and add_vpc_cni WHEN synthesized THEN both add-ons are pinned, and the CNI has
    its policy agent on and takes over the DaemonSet EKS bootstraps."""
    t = built.template
    t.resource_count_is("AWS::EKS::Addon", 2)
    t.has_resource_properties("AWS::EKS::Addon", {"AddonName": "eks-pod-identity-agent",
                                                  "AddonVersion": ADDONS.pod_identity_agent})
    t.has_resource_properties("AWS::EKS::Addon", {
        "AddonName": "vpc-cni", "AddonVersion": ADDONS.vpc_cni, "ResolveConflicts": "OVERWRITE",
        "ConfigurationValues": Match.serialized_json({"enableNetworkPolicy": "true"})})


def test_nvidia_plugin_can_be_added_without_a_gpu_group(built: Built) -> None:
    """GIVEN a cluster whose only GPU group is disabled WHEN add_nvidia_device_plugin is called THEN the pinned chart
    is installed on GPU nodes, tolerating their taint, and kept as ``nvidia``."""
    ic = built.cluster
    assert ic.nvidia is built.first["add_nvidia_device_plugin"]
    built.template.has_resource_properties(HELM, Match.object_like({
        "Chart": "nvidia-device-plugin", "Version": ADDONS.nvidia_device_plugin_chart,
        "Repository": ADDONS.nvidia_device_plugin_repository, "Namespace": "kube-system"}))
    values = json.loads(built.chart("nvidia-device-plugin")[1]["Properties"]["Values"])
    assert values == {"nodeSelector": {"eks-inference/processor": "gpu"},
                      "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}


def test_cluster_autoscaler_can_be_added_with_autoscaling_off(built: Built) -> None:
    """GIVEN node_autoscaling=False WHEN add_cluster_autoscaler is called THEN the autoscaler scales every group of
    the construct, its chart waits for the Pod Identity agent that hands it credentials, and its pod is counted
    on the system nodes."""
    ic = built.cluster
    ca = built.first["add_cluster_autoscaler"]
    assert ic.cluster_autoscaler is ca
    assert ic.cluster_autoscaler.node_groups == list(ic.node_groups.values())
    _, resource = built.chart("cluster-autoscaler")
    assert built.logical_id(ic.pod_identity_agent) in resource["DependsOn"]
    built.template.has_resource_properties("AWS::EKS::PodIdentityAssociation", {
        "Namespace": "kube-system", "ServiceAccount": "cluster-autoscaler"})
    assert [p.name for p in ic.system_pods][-1] == "cluster-autoscaler"


@pytest.mark.parametrize("method", ADD_METHODS)
def test_a_second_call_returns_the_first_construct(built: Built, method: str) -> None:
    """GIVEN an add-on already installed WHEN its add_* method is called again THEN it returns the same construct
    and installs nothing more."""
    assert built.again[method] is built.first[method]


def test_second_calls_add_no_resources_and_no_system_pods(built: Built) -> None:
    """GIVEN every add_* method called twice WHEN synthesized THEN there is one chart per operator and each system
    pod is counted once."""
    built.template.resource_count_is(HELM, 5)
    names = [p.name for p in built.cluster.system_pods]
    assert len(names) == len(set(names)) == 5


@pytest.fixture(scope="module")
def vpc_for_refusals() -> ec2.Vpc:
    return bare_stack("Refused")[1]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"node_groups": [INFERENTIA]}, r"^node_groups: no enabled system group; add one with processor: null$"),
    ({"node_groups": [SYSTEM], "public_access_cidrs": []},
     r"^public_access_cidrs: \[\] with public-and-private endpoint access would open the API to 0\.0\.0\.0/0; "
     r"list the CIDRs"),
    ({"node_groups": [SYSTEM], "public_access_cidrs": ["0.0.0.0/0"]},
     r"^public_access_cidrs: \['0\.0\.0\.0/0'\] opens the API to the whole internet; list your office or VPN"),
    ({"node_groups": [SYSTEM], "endpoint_access": EndpointAccess.PRIVATE,
      "addons": AddonVersions(neuron_kube_scheduler="v1.31.12-eks-1-31-30")},
     rf"^addons\.neuron_kube_scheduler: 'v1\.31\.12-eks-1-31-30' is not a Kubernetes {KUBERNETES_VERSION} "
     "kube-scheduler; pick an EKS Distro tag"),
    ({"node_groups": [SYSTEM], "endpoint_access": EndpointAccess.PRIVATE,
      "addons": AddonVersions(cluster_autoscaler_image="v1.35.0")},
     rf"^addons\.cluster_autoscaler_image: 'v1\.35\.0' is not a Cluster Autoscaler for Kubernetes "
     rf"{KUBERNETES_VERSION}; use the newest"),
    ({"node_groups": [SYSTEM], "public_access_cidrs": ["203.0.113.0/24"], "node_autoscaling": False,
      "load_test_nodes": LOAD_TEST},
     r"^load_test_nodes: the load-test node group stays at zero nodes without the Cluster Autoscaler; keep "
     r"node_autoscaling on, or leave load_test_nodes out$"),
    ({"node_groups": [SYSTEM, NodeGroupSpec(name="loadtest-clients", processor=Processor.CPU,
                                            instance_types=("c7i.xlarge",))],
      "public_access_cidrs": ["203.0.113.0/24"], "load_test_nodes": LOAD_TEST},
     r"^node_groups: 'loadtest-clients' is the load-test node group's name; rename your group$"),
], ids=["no-system-group", "public-without-cidrs", "public-to-everyone", "neuron-scheduler-minor",
        "autoscaler-minor", "load-test-nodes-without-autoscaler", "load-test-group-name-taken"])
def test_bad_configuration_is_refused_before_any_resource(vpc_for_refusals: ec2.Vpc, kwargs: dict[str, Any],
                                                          message: str, request: pytest.FixtureRequest) -> None:
    """GIVEN a configuration the cluster cannot honour safely WHEN the construct is built THEN a ConfigError names
    the field, the value and the fix, and the construct has created nothing."""
    scope = Stack.of(vpc_for_refusals)
    construct_id = request.node.callspec.id
    with pytest.raises(ConfigError, match=message):
        InferenceCluster(scope, construct_id, vpc=vpc_for_refusals, **kwargs)
    assert scope.node.find_child(construct_id).node.children == []

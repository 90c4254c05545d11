"""ClusterStack: EKS on aws_eks_v2 with encrypted secrets, all logs, per-env endpoint, node groups, add-ons."""

from __future__ import annotations

import json
import re
from typing import Any

import aws_cdk.aws_eks_v2 as eks
import pytest
from aws_cdk.assertions import Match, Template

from eks_inference.config import KUBERNETES_VERSION, ConfigError
from tests.conftest import Assembly
from tests.system.nodegroup_update import initial_size


def cluster_template(assemblies: dict[str, Assembly], env_name: str = "dev") -> Template:
    return Template.from_json(assemblies[env_name].template("-Cluster"))


def nodegroups(t: Template) -> dict[str, dict[str, Any]]:
    """Node groups keyed by their processor label."""
    out = {}
    for res in t.find_resources("AWS::EKS::Nodegroup").values():
        props = res["Properties"]
        out[props["Labels"]["eks-inference/processor"]] = props
    return out


def test_kubernetes_version_is_the_newest_aws_eks_v2_offers(assemblies: dict[str, Assembly]) -> None:
    offered = [tuple(map(int, m.group(1, 2))) for n in dir(eks.KubernetesVersion)
               if (m := re.fullmatch(r"V(\d+)_(\d+)", n))]
    assert "{}.{}".format(*max(offered)) == KUBERNETES_VERSION
    cluster_template(assemblies).has_resource_properties("AWS::EKS::Cluster", {"Version": KUBERNETES_VERSION})
    import aws_cdk.lambda_layer_kubectl_v36  # the kubectl layer package matches the minor  # noqa: F401


def test_secrets_encrypted_with_rotating_customer_key(assemblies: dict[str, Assembly]) -> None:
    t = cluster_template(assemblies)
    (key_id,) = t.find_resources("AWS::KMS::Key", {"Properties": {
        "EnableKeyRotation": True, "Description": Match.string_like_regexp("Kubernetes secrets")}})
    t.has_resource_properties("AWS::EKS::Cluster", {
        "EncryptionConfig": [{"Provider": {"KeyArn": {"Fn::GetAtt": [key_id, "Arn"]}}, "Resources": ["secrets"]}],
    })


def test_all_control_plane_log_types(assemblies: dict[str, Assembly]) -> None:
    cluster_template(assemblies, "prod").has_resource_properties("AWS::EKS::Cluster", {
        "Logging": {"ClusterLogging": {"EnabledTypes": Match.array_equals([
            {"Type": "api"}, {"Type": "audit"}, {"Type": "authenticator"},
            {"Type": "controllerManager"}, {"Type": "scheduler"},
        ])}},
    })


def test_endpoint_access_per_environment(assemblies: dict[str, Assembly]) -> None:
    cluster_template(assemblies, "dev").has_resource_properties("AWS::EKS::Cluster", {
        "ResourcesVpcConfig": Match.object_like({
            "EndpointPublicAccess": True, "EndpointPrivateAccess": True, "PublicAccessCidrs": ["203.0.113.0/24"],
        }),
    })
    cluster_template(assemblies, "prod").has_resource_properties("AWS::EKS::Cluster", {
        "ResourcesVpcConfig": Match.object_like({"EndpointPublicAccess": False, "EndpointPrivateAccess": True}),
    })


def test_admin_access_entry(assemblies: dict[str, Assembly]) -> None:
    cluster_template(assemblies).has_resource_properties("AWS::EKS::AccessEntry", {
        "PrincipalArn": "arn:aws:iam::111122223333:role/EksInferenceAdmin",
        "AccessPolicies": [Match.object_like({
            "AccessScope": {"Type": "cluster"},
            "PolicyArn": Match.object_like({"Fn::Join": Match.array_with([
                Match.array_with([":eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"])])}),
        })],
    })


def test_node_groups_ami_instances_labels_taints(assemblies: dict[str, Assembly]) -> None:
    groups = nodegroups(cluster_template(assemblies))
    # gpu and cpu are off by default; the load-test clients' group is always there, at zero nodes between runs
    assert set(groups) == {"system", "graviton", "inferentia", "loadtest"}
    assert groups["graviton"]["AmiType"] == "AL2023_ARM_64_STANDARD"
    assert groups["graviton"]["InstanceTypes"] == ["c7g.2xlarge"]
    assert "Taints" not in groups["graviton"] or groups["graviton"]["Taints"] == []
    assert groups["inferentia"]["AmiType"] == "AL2023_x86_64_NEURON"
    assert groups["inferentia"]["InstanceTypes"] == ["inf2.xlarge"]
    neuron_taint = {"Key": "aws.amazon.com/neuron", "Value": "true", "Effect": "NO_SCHEDULE"}
    assert groups["inferentia"]["Taints"] == [neuron_taint]
    assert groups["system"]["AmiType"] == "AL2023_x86_64_STANDARD"
    loadtest = groups["loadtest"]
    assert (loadtest["AmiType"], loadtest["InstanceTypes"]) == ("AL2023_x86_64_STANDARD", ["c7i.xlarge"])
    assert loadtest["Taints"] == [{"Key": "eks-inference/loadtest", "Value": "true", "Effect": "NO_SCHEDULE"}]
    assert (loadtest["ScalingConfig"]["MinSize"], loadtest["ScalingConfig"]["MaxSize"]) == (0, 2)
    for processor, props in groups.items():
        assert props["Labels"] == {"eks-inference/processor": processor}
        start = initial_size(assemblies["dev"].template("-Cluster"), props)
        assert props["ScalingConfig"]["MinSize"] <= start <= props["ScalingConfig"]["MaxSize"]


def test_node_groups_span_private_subnets_of_three_azs(assemblies: dict[str, Assembly]) -> None:
    net = Template.from_json(assemblies["dev"].template("-Network"))
    private = net.find_resources("AWS::EC2::Subnet", {"Properties": {"MapPublicIpOnLaunch": False}})
    for props in nodegroups(cluster_template(assemblies)).values():
        refs = json.dumps(props["Subnets"])
        assert len(props["Subnets"]) == 3 and all(logical in refs for logical in private)


def test_optional_gpu_and_cpu_groups() -> None:
    from aws_cdk import App, Stack
    from aws_cdk import aws_ec2 as ec2

    from eks_inference.config import EndpointAccess, NodeGroupSpec, Processor
    from eks_inference.constructs.inference_cluster import InferenceCluster

    stack = Stack(App(), "Optional")
    InferenceCluster(
        stack, "Cluster", vpc=ec2.Vpc(stack, "Vpc", max_azs=3), endpoint_access=EndpointAccess.PRIVATE,
        node_groups=[
            NodeGroupSpec(name="system", processor=None, instance_types=("m7g.large",), min_size=1),
            NodeGroupSpec(name="gpu", processor=Processor.GPU, instance_types=("g6.xlarge",), max_size=1),
            NodeGroupSpec(name="cpu", processor=Processor.CPU, instance_types=("c7i.2xlarge",), max_size=1),
        ],
    )
    groups = nodegroups(Template.from_stack(stack))
    assert groups["gpu"]["AmiType"] == "AL2023_x86_64_NVIDIA"
    assert groups["gpu"]["Taints"] == [{"Key": "nvidia.com/gpu", "Value": "true", "Effect": "NO_SCHEDULE"}]
    assert groups["cpu"]["AmiType"] == "AL2023_x86_64_STANDARD"
    assert groups["system"]["AmiType"] == "AL2023_ARM_64_STANDARD"


def test_nodes_require_imdsv2_and_encrypted_volumes(assemblies: dict[str, Assembly]) -> None:
    t = cluster_template(assemblies)
    lts = t.find_resources("AWS::EC2::LaunchTemplate")
    assert len(lts) == 4
    for lt in lts.values():
        data = lt["Properties"]["LaunchTemplateData"]
        assert data["MetadataOptions"] == {"HttpEndpoint": "enabled", "HttpTokens": "required",
                                           "HttpPutResponseHopLimit": 1}
        assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    for props in nodegroups(t).values():
        assert props["LaunchTemplate"]["Id"]["Ref"] in lts


def test_node_role_is_minimal(assemblies: dict[str, Assembly]) -> None:
    t = cluster_template(assemblies)
    roles = t.find_resources("AWS::IAM::Role", {"Properties": {"AssumeRolePolicyDocument": {"Statement": [
        Match.object_like({"Principal": {"Service": "ec2.amazonaws.com"}})]}}})
    assert len(roles) == 1, "all node groups share one node role"
    (role,) = roles.values()
    arns = {json.dumps(a).split("policy/")[1].split('"')[0] for a in role["Properties"]["ManagedPolicyArns"]}
    assert arns == {"AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly", "AmazonEKS_CNI_Policy"}
    assert "Policies" not in role["Properties"]
    (logical,) = roles
    t.resource_properties_count_is("AWS::IAM::Policy", {"Roles": [{"Ref": logical}]}, 0)


def test_no_default_capacity(assemblies: dict[str, Assembly]) -> None:
    t = cluster_template(assemblies)
    t.resource_count_is("AWS::EKS::Nodegroup", 4)
    t.resource_count_is("AWS::AutoScaling::AutoScalingGroup", 0)


def charts(t: Template) -> dict[str, dict[str, Any]]:
    found = t.find_resources("Custom::AWSCDK-EKS-HelmChart")
    return {r["Properties"]["Chart"]: r["Properties"] for r in found.values()}


def test_helm_charts_are_pinned(assemblies: dict[str, Assembly]) -> None:
    c = charts(cluster_template(assemblies))
    assert c["kuberay-operator"]["Version"] == "1.7.0"
    assert c["kuberay-operator"]["Repository"] == "https://ray-project.github.io/kuberay-helm/"
    assert c["kuberay-operator"]["Namespace"] == "kuberay-system"
    assert c["metrics-server"]["Version"] == "3.13.0"
    assert c["neuron-helm-chart"]["Version"] == "1.10.0"
    assert c["neuron-helm-chart"]["Repository"] == "oci://public.ecr.aws/neuron/neuron-helm-chart"
    assert c["cluster-autoscaler"]["Version"] == "9.59.0"
    assert c["cluster-autoscaler"]["Repository"] == "https://kubernetes.github.io/autoscaler"
    for name, props in c.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", props["Version"])
        if name == "cluster-autoscaler":  # auto-discovery needs the cluster's name, known only at deploy time
            sep, parts = props["Values"]["Fn::Join"]
            (cluster_id,) = cluster_template(assemblies).find_resources("AWS::EKS::Cluster")
            assert sep == "" and [p for p in parts if not isinstance(p, str)] == [{"Ref": cluster_id}]
        elif name == "aws-load-balancer-controller":  # the cluster's name and VPC, known only at deploy time
            sep, parts = props["Values"]["Fn::Join"]
            (cluster_id,) = cluster_template(assemblies).find_resources("AWS::EKS::Cluster")
            assert sep == "" and {"Ref": cluster_id} in parts
            assert [next(iter(p)) for p in parts if not isinstance(p, str)] == ["Ref", "Fn::GetStackOutput"]
        else:
            assert json.loads(props["Values"])  # values are literal, reviewable in cdk diff


def test_neuron_chart_runs_device_plugin_and_scheduler_extension(assemblies: dict[str, Assembly]) -> None:
    values = json.loads(charts(cluster_template(assemblies))["neuron-helm-chart"]["Values"])
    assert values["scheduler"]["enabled"] is True
    assert values["scheduler"]["customScheduler"]["enabled"] is True
    assert {"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"} in values["devicePlugin"][
        "tolerations"]
    assert values["npd"] == {"enabled": False}
    # The chart's second kube-scheduler defaults to a 1.31 build; it runs the cluster's minor instead.
    tag = values["scheduler"]["customScheduler"]["image"]["tag"]
    assert tag.startswith(f"v{KUBERNETES_VERSION}.") and f"-eks-{KUBERNETES_VERSION.replace('.', '-')}-" in tag


def test_neuron_scheduler_of_another_minor_is_refused() -> None:
    from eks_inference.constructs.inference_cluster import _check_scheduler_minor

    with pytest.raises(ConfigError, match=r"addons.neuron_kube_scheduler: 'v1.31.12-eks-1-31-30' is not a "
                                          rf"Kubernetes {KUBERNETES_VERSION} kube-scheduler; pick an EKS Distro"):
        _check_scheduler_minor("v1.31.12-eks-1-31-30")


def test_builtin_neuron_device_plugin_manifest_is_not_used(assemblies: dict[str, Assembly]) -> None:
    """aws_eks_v2's own device plugin (old image, deprecated node label) is replaced by the pinned chart."""
    manifests = cluster_template(assemblies).find_resources("Custom::AWSCDK-EKS-KubernetesResource")
    assert not any("neuron-device-plugin" in json.dumps(m) for m in manifests.values())


def test_operators_run_on_system_nodes_with_the_requests_the_capacity_check_counts(
        assemblies: dict[str, Assembly]) -> None:
    from eks_inference.k8s.capacity import KUBERAY_OPERATOR, METRICS_SERVER

    for name, resources in (("kuberay-operator", KUBERAY_OPERATOR), ("metrics-server", METRICS_SERVER)):
        values = json.loads(charts(cluster_template(assemblies))[name]["Values"])
        assert values["nodeSelector"] == {"eks-inference/processor": "system"}
        assert values["resources"] == resources.to_dict()


def test_pod_identity_agent_addon_is_pinned(assemblies: dict[str, Assembly]) -> None:
    t = cluster_template(assemblies)
    t.resource_count_is("AWS::EKS::Addon", 3)  # Pod Identity agent, VPC CNI, CloudWatch log agent
    t.has_resource_properties("AWS::EKS::Addon", {
        "AddonName": "eks-pod-identity-agent", "AddonVersion": Match.string_like_regexp(r"^v\d+\.\d+\.\d+-eksbuild")})


def test_vpc_cni_addon_enforces_network_policies(assemblies: dict[str, Assembly]) -> None:
    """Without it EKS runs the CNI it bootstraps, whose policy agent is off: NetworkPolicies do nothing."""
    for env_name in ("dev", "prod"):
        addons = cluster_template(assemblies, env_name).find_resources(
            "AWS::EKS::Addon", {"Properties": {"AddonName": "vpc-cni"}})
        (addon,) = addons.values()
        props = addon["Properties"]
        assert re.fullmatch(r"v\d+\.\d+\.\d+-eksbuild\.\d+", props["AddonVersion"])
        assert json.loads(props["ConfigurationValues"]) == {"enableNetworkPolicy": "true"}
        assert props["ResolveConflicts"] == "OVERWRITE"  # takes over the DaemonSet EKS bootstraps


def test_prod_kubectl_provider_runs_in_the_vpc(assemblies: dict[str, Assembly]) -> None:
    """With a private endpoint, the kubectl Lambda must sit in the private subnets to reach the API."""
    t = cluster_template(assemblies, "prod")
    handlers = t.find_resources("AWS::Lambda::Function", {"Properties": {"VpcConfig": Match.any_value()}})
    assert handlers, "kubectl handler has no VpcConfig in prod"

"""An EKS cluster ready for model serving: node groups per processor plus the operators serving needs."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import TypeVar, cast

from aws_cdk import CfnResource, Duration, RemovalPolicy, Stack, Token
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk.lambda_layer_kubectl_v36 import KubectlV36Layer
from constructs import Construct

from eks_inference.config import (
    KUBERNETES_VERSION,
    AddonVersions,
    ConfigError,
    EndpointAccess,
    NodeGroupSpec,
    Processor,
)
from eks_inference.constructs.cluster_autoscaler import RESOURCES as CLUSTER_AUTOSCALER
from eks_inference.constructs.cluster_autoscaler import ClusterAutoscaler, check_image_minor
from eks_inference.constructs.load_balancer_controller import REPLICAS as LBC_REPLICAS
from eks_inference.constructs.load_balancer_controller import RESOURCES as LBC_RESOURCES
from eks_inference.constructs.load_balancer_controller import LoadBalancerController
from eks_inference.constructs.processor_node_group import (
    GPU_TAINT_KEY,
    NEURON_TAINT_KEY,
    PROCESSOR_LABEL,
    ProcessorNodeGroup,
    node_role,
)
from eks_inference.constructs.trust import own_arn, restrict_service_trust, source_conditions
from eks_inference.k8s.capacity import (
    KUBERAY_OPERATOR,
    METRICS_SERVER,
    NEURON_KUBE_SCHEDULER,
    NEURON_SCHEDULER_EXTENSION,
    PodRequest,
)
from eks_inference.k8s.kuberay_operator import operator_network_policies
from eks_inference.k8s.load_test_nodes import LOADTEST_NODES, LOADTEST_TAINT_KEY

KUBERAY_NAMESPACE = "kuberay-system"
NEURON_SCHEDULER_NAME = "neuron-scheduler"
"""Pods that need several Neuron devices set ``schedulerName`` to this (the Neuron scheduler extension)."""

ALL_LOG_TYPES = (
    eks.ClusterLoggingTypes.API,
    eks.ClusterLoggingTypes.AUDIT,
    eks.ClusterLoggingTypes.AUTHENTICATOR,
    eks.ClusterLoggingTypes.CONTROLLER_MANAGER,
    eks.ClusterLoggingTypes.SCHEDULER,
)

_SYSTEM_SELECTOR = {PROCESSOR_LABEL: "system"}

_C = TypeVar("_C", bound=Construct)


def _installs_once(add: Callable[[InferenceCluster], _C]) -> Callable[[InferenceCluster], _C]:
    """An ``add_*`` method that builds its add-on on the first call and returns that construct on every later
    one (a second build would collide with the first by construct id)."""

    @functools.wraps(add)
    def once(self: InferenceCluster) -> _C:
        if add.__name__ not in self._added:
            self._added[add.__name__] = add(self)
        return cast(_C, self._added[add.__name__])

    return once


class InferenceCluster(Construct):
    """EKS (``aws_eks_v2``) with one managed node group per processor and the serving operators.

    What it adds: a customer-managed KMS key (rotation on) for Kubernetes secrets; every control-plane
    log type; endpoint access as configured; an admin access entry; no default capacity (each group is
    explicit); then, one ``add_*`` method each, in this order: the EKS Pod Identity agent and the VPC CNI
    with NetworkPolicy enforcement on (EKS add-ons, pinned), the KubeRay operator, metrics-server, the Neuron
    device plugin and scheduler extension (when an inf2 group exists), the Cluster Autoscaler
    (:class:`ClusterAutoscaler`, unless ``node_autoscaling`` is off), the NVIDIA device plugin (when a GPU
    group exists) and the AWS Load Balancer Controller with the Gateway API CRDs (:class:`LoadBalancerController`,
    with ``front_door``), the charts Helm, pinned.

    The ``add_*`` methods are public, as ``aws_eks_v2.Cluster`` has ``add_neuron_device_plugin``: an app may add
    an operator the configuration did not ask for (the NVIDIA plugin before its first GPU group, say). Each
    installs its add-on once; calling it again returns the construct the first call made, so code that needs
    an add-on may call its method rather than test whether it exists. The construct is also kept as an
    attribute (``neuron``, ``nvidia``, ``cluster_autoscaler`` and ``load_balancer_controller`` stay ``None`` until
    added).

    Without the ``vpc-cni`` add-on configured with ``enableNetworkPolicy``, EKS runs the CNI it bootstraps,
    whose network policy agent is off: NetworkPolicies are accepted and silently not enforced. The add-on
    takes that DaemonSet over (``ResolveConflicts: OVERWRITE``) and stays managed by the stack.

    ``aws_eks_v2`` adds its own Neuron device plugin manifest when inf2 groups come through
    ``add_nodegroup_capacity``; that manifest points at an old, unpinned image and selects nodes by the
    deprecated ``beta.kubernetes.io/instance-type`` label. Groups are therefore created as
    :class:`ProcessorNodeGroup` (``eks.Nodegroup`` directly) and the Neuron Helm chart, pinned, is
    installed instead.

    :param vpc: the VPC; nodes go to its private subnets.
    :param node_groups: node group specs; disabled ones are skipped; one must be the system group.
    :param endpoint_access: default public-and-private, limited to ``public_access_cidrs``.
    :param public_access_cidrs: default none; required with public-and-private access, never ``/0``.
    :param admin_role_arn: IAM role granted AmazonEKSClusterAdminPolicy; default none.
    :param addons: pinned add-on versions; default :class:`AddonVersions`.
    :param secrets_key: KMS key for Kubernetes secrets; default a new key with rotation, retained on delete.
    :param cluster_name: default generated by CloudFormation.
    :param node_autoscaling: install the Cluster Autoscaler, which sizes every group between its min and max
        size; default true. Without it each group stays at its desired size.
    :param load_test_nodes: the load-test clients' node group
        (:func:`~eks_inference.k8s.load_test_nodes.load_test_node_group`), labelled
        ``eks-inference/processor=loadtest`` and tainted so that only the load-test Jobs' pods land there; at zero
        nodes until a run's pods wait, the Cluster Autoscaler brings it up and removes it after. Needs
        ``node_autoscaling``. Default none: load-test pods would wait for nodes that never come.
    :param front_door: install the AWS Load Balancer Controller, which serves the Gateway API as Application Load
        Balancers (the environment's ``front_door``); default false.
    """

    pod_identity_agent: eks.Addon
    """The ``eks-pod-identity-agent`` add-on (:meth:`add_pod_identity_agent`)."""
    vpc_cni: eks.Addon
    """The ``vpc-cni`` add-on with NetworkPolicy enforcement (:meth:`add_vpc_cni`)."""
    kuberay_operator: eks.HelmChart
    """The KubeRay operator chart (:meth:`add_kuberay_operator`)."""
    kuberay_network_policies: eks.KubernetesManifest
    """The operator namespace's NetworkPolicies (:meth:`add_kuberay_operator`)."""
    metrics_server: eks.HelmChart
    """The metrics-server chart (:meth:`add_metrics_server`)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        node_groups: Sequence[NodeGroupSpec],
        endpoint_access: EndpointAccess = EndpointAccess.PUBLIC_AND_PRIVATE,
        public_access_cidrs: Sequence[str] = (),
        admin_role_arn: str | None = None,
        addons: AddonVersions | None = None,
        secrets_key: kms.IKey | None = None,
        cluster_name: str | None = None,
        node_autoscaling: bool = True,
        load_test_nodes: NodeGroupSpec | None = None,
        front_door: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        enabled = [g for g in node_groups if g.enabled]
        if load_test_nodes is not None:
            if not node_autoscaling:
                raise ConfigError("load_test_nodes: the load-test node group stays at zero nodes without the Cluster "
                                  "Autoscaler; keep node_autoscaling on, or leave load_test_nodes out")
            if any(g.name == load_test_nodes.name for g in enabled):
                raise ConfigError(f"node_groups: {load_test_nodes.name!r} is the load-test node group's name; "
                                  "rename your group")
        if not any(g.processor is None for g in enabled):
            raise ConfigError("node_groups: no enabled system group; add one with processor: null")
        if endpoint_access is EndpointAccess.PUBLIC_AND_PRIVATE and not public_access_cidrs:
            raise ConfigError(
                "public_access_cidrs: [] with public-and-private endpoint access would open the API to "
                "0.0.0.0/0; list the CIDRs that may reach it, or use private access"
            )
        if any(c.endswith("/0") for c in public_access_cidrs):
            raise ConfigError(
                f"public_access_cidrs: {list(public_access_cidrs)!r} opens the API to the whole internet; "
                "list your office or VPN ranges"
            )
        self.addon_versions = addons or AddonVersions()
        _check_scheduler_minor(self.addon_versions.neuron_kube_scheduler)
        if node_autoscaling:
            check_image_minor(self.addon_versions.cluster_autoscaler_image)

        self._added: dict[str, Construct] = {}
        self.system_pods: list[PodRequest] = []
        """Operator pods this construct places on the system nodes (the load-test capacity check counts them);
        each ``add_*`` method appends its own."""
        self.neuron: eks.HelmChart | None = None
        """The Neuron chart (:meth:`add_neuron_device_plugin`); ``None`` until added."""
        self.cluster_autoscaler: ClusterAutoscaler | None = None
        """The Cluster Autoscaler (:meth:`add_cluster_autoscaler`); ``None`` until added."""
        self.nvidia: eks.HelmChart | None = None
        """The NVIDIA device plugin chart (:meth:`add_nvidia_device_plugin`); ``None`` until added."""
        self.load_balancer_controller: LoadBalancerController | None = None
        """The AWS Load Balancer Controller (:meth:`add_load_balancer_controller`); ``None`` until added."""

        self.secrets_key = secrets_key or kms.Key(
            self,
            "SecretsKey",
            description="Envelope encryption of Kubernetes secrets for the eks-inference cluster",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        if endpoint_access is EndpointAccess.PRIVATE:
            access = eks.EndpointAccess.PRIVATE
        else:
            access = eks.EndpointAccess.PUBLIC_AND_PRIVATE.only_from(*public_access_cidrs)
        private_subnets = vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS).subnets
        self.api_server_cidrs = [s.ipv4_cidr_block for s in private_subnets]
        """The cluster's subnets, where EKS puts the control plane's network interfaces: NetworkPolicies name them to
        let a pod reach the API server."""
        if any(Token.is_unresolved(c) for c in self.api_server_cidrs):
            raise ConfigError("vpc: its private subnets' CIDRs are known only at deploy time, and the NetworkPolicies "
                              "that admit the API server need them at synth; pass an ec2.Vpc or a looked-up VPC")

        self.cluster = eks.Cluster(
            self,
            "Cluster",
            version=eks.KubernetesVersion.of(KUBERNETES_VERSION),
            cluster_name=cluster_name,
            vpc=vpc,
            vpc_subnets=[ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)],
            endpoint_access=access,
            secrets_encryption_key=self.secrets_key,
            cluster_logging=list(ALL_LOG_TYPES),
            default_capacity_type=eks.DefaultCapacityType.NODEGROUP,
            default_capacity=0,
            kubectl_provider_options=eks.KubectlProviderOptions(
                kubectl_layer=KubectlV36Layer(self, "KubectlLayer"),
                private_subnets=private_subnets if endpoint_access is EndpointAccess.PRIVATE else None,
            ),
        )
        # The control plane's role admits EKS acting for a cluster of this account and region only; the name is
        # CloudFormation's to choose, so the ARN ends in a wildcard (EKS User Guide, confused deputy prevention).
        restrict_service_trust(self.cluster.role, "eks.amazonaws.com",
                               source_conditions(own_arn("eks", "cluster/*")))
        if admin_role_arn:
            self.cluster.grant_access(
                "AdminAccess",
                admin_role_arn,
                [
                    eks.AccessPolicy.from_access_policy_name(
                        "AmazonEKSClusterAdminPolicy", access_scope_type=eks.AccessScopeType.CLUSTER
                    )
                ],
            )

        self.node_role: iam.IRole = node_role(self, "NodeRole")
        self.node_groups: dict[str, ProcessorNodeGroup] = {}
        for spec in enabled:
            self.node_groups[spec.name] = ProcessorNodeGroup(
                self, _pascal(spec.name), cluster=self._icluster, spec=spec, role=self.node_role
            )
        self.system_group = next(g for g in self.node_groups.values() if g.spec.processor is None)
        """The group the operators run on (``eks-inference/processor=system``); their charts wait for it."""
        self.load_test_group: ProcessorNodeGroup | None = None
        """The load-test clients' group (``load_test_nodes``), also in :attr:`node_groups`; None without one."""
        if load_test_nodes is not None:
            self.load_test_group = self.node_groups[load_test_nodes.name] = ProcessorNodeGroup(
                self, _pascal(load_test_nodes.name), cluster=self._icluster, spec=load_test_nodes,
                role=self.node_role, labels={PROCESSOR_LABEL: LOADTEST_NODES},
                taints=[eks.TaintSpec(key=LOADTEST_TAINT_KEY, value="true", effect=eks.TaintEffect.NO_SCHEDULE)])

        self.add_pod_identity_agent()
        self.add_vpc_cni()
        self.add_kuberay_operator()
        self.add_metrics_server()
        if any(g.processor is Processor.INFERENTIA for g in enabled):
            self.add_neuron_device_plugin()
        if node_autoscaling:
            self.add_cluster_autoscaler()
        if any(g.processor is Processor.GPU for g in enabled):
            self.add_nvidia_device_plugin()
        if front_door:
            self.add_load_balancer_controller()

    @property
    def _icluster(self) -> eks.ICluster:
        # jsii's Cluster satisfies ICluster at run time; mypy cannot see it through the protocol.
        return cast(eks.ICluster, self.cluster)

    @_installs_once
    def add_pod_identity_agent(self) -> eks.Addon:
        """The EKS Pod Identity agent add-on (``addons.pod_identity_agent``): how the Cluster Autoscaler, the
        serving pods and the load-test clients get AWS credentials. Kept as :attr:`pod_identity_agent`."""
        self.pod_identity_agent = eks.Addon(
            self,
            "PodIdentityAgent",
            cluster=self._icluster,
            addon_name="eks-pod-identity-agent",
            addon_version=self.addon_versions.pod_identity_agent,
            preserve_on_delete=False,
        )
        return self.pod_identity_agent

    @_installs_once
    def add_vpc_cni(self) -> eks.Addon:
        """The ``vpc-cni`` add-on (``addons.vpc_cni``) with ``enableNetworkPolicy``, taking over the DaemonSet EKS
        bootstraps so that NetworkPolicies are enforced. Kept as :attr:`vpc_cni`."""
        self.vpc_cni = eks.Addon(
            self,
            "VpcCni",
            cluster=self._icluster,
            addon_name="vpc-cni",
            addon_version=self.addon_versions.vpc_cni,
            configuration_values={"enableNetworkPolicy": "true"},
            preserve_on_delete=False,
        )
        # The cluster bootstraps a self-managed aws-node DaemonSet; the add-on must take it over, not fail on it.
        cast(CfnResource, self.vpc_cni.node.default_child).add_property_override("ResolveConflicts", "OVERWRITE")
        return self.vpc_cni

    @_installs_once
    def add_kuberay_operator(self) -> eks.HelmChart:
        """The KubeRay operator chart (``addons.kuberay_operator_chart``) in ``kuberay-system``, on the system
        nodes: it turns each RayService into a Ray cluster. Installed with ``wait`` so that RayServices applied
        after it find their CRD. Kept as :attr:`kuberay_operator`. Its namespace then denies every connection but the
        operator's own to DNS, the API server and the Ray heads (:attr:`kuberay_network_policies`)."""
        v = self.addon_versions
        self.kuberay_operator = self.cluster.add_helm_chart(
            "KubeRayOperator",
            chart="kuberay-operator",
            release="kuberay-operator",
            repository=v.kuberay_repository,
            version=v.kuberay_operator_chart,
            namespace=KUBERAY_NAMESPACE,
            create_namespace=True,
            wait=True,
            timeout=Duration.minutes(10),
            values={
                "nodeSelector": _SYSTEM_SELECTOR,
                "resources": KUBERAY_OPERATOR.to_dict(),
            },
        )
        self.kuberay_operator.node.add_dependency(self.system_group.nodegroup)
        # Its namespace exists once the release does.
        self.kuberay_network_policies = self.cluster.add_manifest(
            "KubeRayNetworkPolicies", *operator_network_policies(api_server_cidrs=self.api_server_cidrs,
                                                                 namespace_=KUBERAY_NAMESPACE))
        self.kuberay_network_policies.node.add_dependency(self.kuberay_operator, self.add_vpc_cni())
        self.system_pods.append(PodRequest.of("kuberay-operator", KUBERAY_OPERATOR))
        return self.kuberay_operator

    @_installs_once
    def add_metrics_server(self) -> eks.HelmChart:
        """The metrics-server chart (``addons.metrics_server_chart``) in ``kube-system``, on the system nodes
        (``kubectl top`` and the resource metrics API). Kept as :attr:`metrics_server`."""
        v = self.addon_versions
        self.metrics_server = self.cluster.add_helm_chart(
            "MetricsServer",
            chart="metrics-server",
            release="metrics-server",
            repository=v.metrics_server_repository,
            version=v.metrics_server_chart,
            namespace="kube-system",
            values={"nodeSelector": _SYSTEM_SELECTOR, "resources": METRICS_SERVER.to_dict()},
        )
        self.metrics_server.node.add_dependency(self.system_group.nodegroup)
        self.system_pods.append(PodRequest.of("metrics-server", METRICS_SERVER))
        return self.metrics_server

    @_installs_once
    def add_neuron_device_plugin(self) -> eks.HelmChart:
        """The Neuron Helm chart (``addons.neuron_chart``): the device plugin on every node that tolerates the
        Neuron taint, and the scheduler extension with its own kube-scheduler (``addons.neuron_kube_scheduler``,
        the cluster's minor) on the system nodes, named :data:`NEURON_SCHEDULER_NAME`. Installed by the
        constructor when an inf2 group is enabled. Kept as :attr:`neuron`."""
        v = self.addon_versions
        self.neuron = self.cluster.add_helm_chart(
            "NeuronHelmChart",
            chart="neuron-helm-chart",
            release="neuron",
            repository=v.neuron_repository,
            version=v.neuron_chart,
            namespace="kube-system",
            values={
                "devicePlugin": {
                    "tolerations": [
                        {"key": "CriticalAddonsOnly", "operator": "Exists"},
                        {"key": NEURON_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"},
                    ],
                },
                "scheduler": {
                    "enabled": True,
                    "nodeSelector": _SYSTEM_SELECTOR,
                    "resources": NEURON_SCHEDULER_EXTENSION.to_dict(),
                    # The chart's second kube-scheduler defaults to a 1.31 build; it must be the cluster's minor.
                    "customScheduler": {
                        "enabled": True,
                        "fullnameOverride": NEURON_SCHEDULER_NAME,
                        "nodeSelector": _SYSTEM_SELECTOR,
                        "image": {"tag": v.neuron_kube_scheduler},
                        "resources": NEURON_KUBE_SCHEDULER.to_dict(),
                    },
                },
                # Node problem detector needs its own IAM role to replace nodes; out of scope here.
                "npd": {"enabled": False},
            },
        )
        self.neuron.node.add_dependency(self.system_group.nodegroup)
        self.system_pods.extend([PodRequest.of("neuron scheduler extension", NEURON_SCHEDULER_EXTENSION),
                                 PodRequest.of("neuron kube-scheduler", NEURON_KUBE_SCHEDULER)])
        return self.neuron

    @_installs_once
    def add_cluster_autoscaler(self) -> ClusterAutoscaler:
        """The Cluster Autoscaler (:class:`ClusterAutoscaler`) for every node group of this construct, on the
        system nodes; its chart waits for the Pod Identity agent, which hands it its credentials. Installed by
        the constructor unless ``node_autoscaling`` is false. Kept as :attr:`cluster_autoscaler`."""
        self.cluster_autoscaler = ClusterAutoscaler(
            self, "ClusterAutoscaler", cluster=self.cluster, node_groups=list(self.node_groups.values()),
            addons=self.addon_versions, region=Stack.of(self).region, node_selector=_SYSTEM_SELECTOR)
        self.cluster_autoscaler.chart.node.add_dependency(self.system_group.nodegroup,
                                                          self.add_pod_identity_agent())
        self.system_pods.append(PodRequest.of("cluster-autoscaler", CLUSTER_AUTOSCALER))
        return self.cluster_autoscaler

    @_installs_once
    def add_nvidia_device_plugin(self) -> eks.HelmChart:
        """The NVIDIA device plugin chart (``addons.nvidia_device_plugin_chart``) on the GPU nodes (it tolerates
        their taint), which advertises ``nvidia.com/gpu``. Installed by the constructor when a GPU group is
        enabled. Kept as :attr:`nvidia`."""
        v = self.addon_versions
        self.nvidia = self.cluster.add_helm_chart(
            "NvidiaDevicePlugin",
            chart="nvidia-device-plugin",
            release="nvidia-device-plugin",
            repository=v.nvidia_device_plugin_repository,
            version=v.nvidia_device_plugin_chart,
            namespace="kube-system",
            values={
                "nodeSelector": {PROCESSOR_LABEL: "gpu"},
                "tolerations": [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
            },
        )
        return self.nvidia

    @_installs_once
    def add_load_balancer_controller(self) -> LoadBalancerController:
        """The AWS Load Balancer Controller (``addons.load_balancer_controller_chart``) with the Gateway API CRDs
        (``addons.gateway_api``) on the system nodes: a Gateway of its class becomes an Application Load Balancer.
        Its chart waits for the Pod Identity agent, which hands it its credentials, and for the VPC CNI (its
        targets are pod IPs). Installed by the constructor with ``front_door``. Kept as
        :attr:`load_balancer_controller`."""
        self.load_balancer_controller = LoadBalancerController(
            self, "LoadBalancerController", cluster=self.cluster, addons=self.addon_versions,
            region=Stack.of(self).region, node_selector=_SYSTEM_SELECTOR)
        self.load_balancer_controller.chart.node.add_dependency(self.system_group.nodegroup,
                                                                self.add_pod_identity_agent(), self.add_vpc_cni())
        self.system_pods.extend(PodRequest.of(f"aws-load-balancer-controller {i + 1}", LBC_RESOURCES)
                                for i in range(LBC_REPLICAS))
        return self.load_balancer_controller


def _check_scheduler_minor(tag: str) -> None:
    """The Neuron chart's second scheduler is a kube-scheduler; one of another minor than the cluster's is
    outside Kubernetes' version-skew policy and may not understand the cluster's scheduling API."""
    m = re.match(r"^v?(\d+)\.(\d+)\.", tag)
    if not m or f"{m[1]}.{m[2]}" != KUBERNETES_VERSION:
        raise ConfigError(
            f"addons.neuron_kube_scheduler: {tag!r} is not a Kubernetes {KUBERNETES_VERSION} kube-scheduler; "
            f"pick an EKS Distro tag of {KUBERNETES_VERSION}, e.g. v{KUBERNETES_VERSION}.0-eks-"
            f"{KUBERNETES_VERSION.replace('.', '-')}-1"
        )


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-")) + "NodeGroup"

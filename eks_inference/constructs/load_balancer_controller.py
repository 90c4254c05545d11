"""The AWS Load Balancer Controller, serving the Kubernetes Gateway API as Application Load Balancers.

Its IAM policy is the controller's own, kept verbatim beside this module
(``load_balancer_controller_iam_policy.json``, from kubernetes-sigs/aws-load-balancer-controller
``docs/install/iam_policy.json`` at the tag of the pinned chart, v3.5.0): the controller creates and tags load
balancers, target groups, listeners, rules and security groups whose names and ids it picks at run time, and scopes
its mutating calls by the ``elbv2.k8s.aws/cluster`` tag it puts on them. Its credentials come through EKS Pod
Identity, like every other add-on of the cluster.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from eks_inference.config import AddonVersions, ConfigError
from eks_inference.constructs.trust import pod_identity_role
from eks_inference.k8s.gateway_api import GATEWAY_API_VERSION, installed_crds
from eks_inference.k8s.pod import Resources

NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "aws-load-balancer-controller"
"""Named explicitly: the Pod Identity association binds by namespace and service-account name."""
RELEASE = "aws-load-balancer-controller"
REPLICAS = 2
"""The chart's default: one leader, one standby, so a drained system node does not stop reconciliation."""
RESOURCES = Resources(cpu="100m", cpu_limit="500m", memory="256Mi")
"""Each replica's requests; counted with the operators on the system nodes."""
IAM_POLICY_FILE = Path(__file__).with_name("load_balancer_controller_iam_policy.json")
IAM_POLICY_SOURCE = "kubernetes-sigs/aws-load-balancer-controller v3.5.0 docs/install/iam_policy.json"
FEATURE_GATES = {"ALBGatewayAPI": True, "NLBGatewayAPI": False}
"""The ALB gateway controller on (it would also turn itself on when it finds the CRDs), the NLB one off: no TCP or
UDP routes are rendered, and its CRDs are not installed."""


def iam_policy() -> dict[str, Any]:
    """The controller's documented IAM policy, as upstream publishes it."""
    policy: dict[str, Any] = json.loads(IAM_POLICY_FILE.read_text())
    return policy


def helm_values(*, cluster_name: str, region: str, vpc_id: str,
                node_selector: Mapping[str, str]) -> dict[str, Any]:
    """The chart's values (chart 3.5.0 ``values.yaml``): the cluster and VPC named (no IMDS lookup, which the nodes'
    hop limit of 1 refuses to pods), the service account the Pod Identity association names, replicas on the system
    nodes, no IngressClass (this project routes through the Gateway API only) and no Service mutator webhook (it
    would hand every ``type: LoadBalancer`` Service to the controller)."""
    return {
        "clusterName": cluster_name,
        "region": region,
        "vpcId": vpc_id,
        "replicaCount": REPLICAS,
        "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT},
        "nodeSelector": dict(node_selector),
        "resources": RESOURCES.to_dict(),
        "createIngressClassResource": False,
        "enableServiceMutatorWebhook": False,
        "controllerConfig": {"featureGates": dict(FEATURE_GATES)},
    }


class LoadBalancerController(Construct):
    """The Gateway API CRDs, the controller's Helm chart and its Pod Identity role.

    :param cluster: the cluster it runs in.
    :param addons: the pinned chart (``load_balancer_controller_chart``) and Gateway API release (``gateway_api``).
    :param region: the cluster's region.  :param node_selector: where its pods run (the system nodes).
    """

    def __init__(self, scope: Construct, construct_id: str, *, cluster: eks.Cluster, addons: AddonVersions,
                 region: str, node_selector: Mapping[str, str]) -> None:
        super().__init__(scope, construct_id)
        if addons.gateway_api != GATEWAY_API_VERSION:
            raise ConfigError(f"addons.gateway_api: {addons.gateway_api!r} is not the Gateway API release this "
                              f"project's CRDs and checks are for ({GATEWAY_API_VERSION}); keep {GATEWAY_API_VERSION}, "
                              "or update eks_inference/k8s/gateway_api_crds.json and tests/data/crds with it")
        self.role = pod_identity_role(
            self, "Role", description="AWS Load Balancer Controller: manage the front door's load balancer",
            cluster_arn=cluster.cluster_arn, namespace=NAMESPACE, service_account=SERVICE_ACCOUNT)
        self.policy = iam.Policy(self, "Policy", document=iam.PolicyDocument.from_json(iam_policy()))
        self.policy.attach_to_role(self.role)
        self.pod_identity = eks.CfnPodIdentityAssociation(
            self, "PodIdentity", cluster_name=cluster.cluster_name, namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT, role_arn=self.role.role_arn)
        self.crds = cluster.add_manifest("GatewayApiCrds", *installed_crds())
        """The Gateway API CRDs: present before the controller starts, which enables its ALB gateway controller."""
        self.chart = cluster.add_helm_chart(
            "Chart", chart="aws-load-balancer-controller", release=RELEASE,
            repository=addons.load_balancer_controller_repository, version=addons.load_balancer_controller_chart,
            namespace=NAMESPACE, wait=True, timeout=Duration.minutes(10),
            values=helm_values(cluster_name=cluster.cluster_name, region=region, vpc_id=cluster.vpc.vpc_id,
                               node_selector=node_selector))
        self.chart.node.add_dependency(self.crds, self.pod_identity, self.policy)

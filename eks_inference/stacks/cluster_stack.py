"""The EKS cluster, its node groups and operators."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from eks_inference.config import PlatformConfig, Processor
from eks_inference.constructs.cluster_logging import ClusterLogging
from eks_inference.constructs.inference_cluster import InferenceCluster
from eks_inference.constructs.observability import ClusterObservability
from eks_inference.k8s.load_test_nodes import load_test_node_group
from eks_inference.k8s.serving_chart import NAMESPACE
from eks_inference.nag import acknowledge, checkov_skip
from eks_inference.observability.rules import rules_for


def cluster_name_for(env_name: str) -> str:
    """The EKS cluster's name, fixed at synth: its control-plane log group is named after it and made before it."""
    return f"eks-inference-{env_name}"


class ClusterStack(Stack):
    """Wraps :class:`InferenceCluster` for one environment and records why each cdk-nag finding stands."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: PlatformConfig, vpc: ec2.IVpc, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        cluster_name = cluster_name_for(config.env_name)
        # Log groups before the cluster and the log agent: EKS and Fluent Bit would create them without a retention
        # or a customer key.
        self.logging = ClusterLogging(self, "Logging", cluster_name=cluster_name,
                                      retention_days=config.log_retention_days)
        self.inference_cluster = InferenceCluster(
            self,
            "InferenceCluster",
            vpc=vpc,
            node_groups=config.node_groups,
            endpoint_access=config.endpoint_access,
            public_access_cidrs=config.public_access_cidrs,
            admin_role_arn=config.admin_role_arn,
            addons=config.addons,
            cluster_name=cluster_name,
            load_test_nodes=load_test_node_group(config.loadtest, sum(len(m.processors) for m in config.models)),
            front_door=config.front_door.enabled,
        )
        self.cluster = self.inference_cluster.cluster
        self.logging.before(self.cluster)
        ic = self.inference_cluster
        self.logging.add_agent(ic.cluster, version=config.addons.cloudwatch_observability,
                               cluster_arn=self.cluster.cluster_arn,
                               after=[ic.pod_identity_agent, *(g.nodegroup for g in ic.node_groups.values())])
        CfnOutput(self, "ClusterName", value=self.cluster.cluster_name)
        CfnOutput(
            self,
            "UpdateKubeconfig",
            value=f"aws eks update-kubeconfig --region {self.region} --name {self.cluster.cluster_name}",
        )
        self.observability: ClusterObservability | None = None
        """Metrics workspace, managed scraper, alert rules and exporters (``observability.enabled``)."""
        if config.observability.enabled:
            ic = self.inference_cluster
            processors = {g.processor for g in config.enabled_node_groups}
            self.observability = obs = ClusterObservability(
                self, "Observability", cluster=self.cluster, vpc=vpc, vpc_cidr=config.vpc_cidr,
                spec=config.observability,
                rules=rules_for(config), serving_namespace=NAMESPACE, neuron=Processor.INFERENTIA in processors,
                gpu=Processor.GPU in processors, addons=config.addons,
                after=[ic.vpc_cni, *(g.nodegroup for g in ic.node_groups.values())])
            CfnOutput(self, "AlertTopicArn", value=obs.alerts.topic.topic_arn,
                      description="Subscribe to it to receive the metrics workspace's alerts (aws sns subscribe)")
            CfnOutput(self, "MetricsWorkspaceId", value=obs.workspace.attr_workspace_id)
            CfnOutput(self, "MetricsQueryEndpoint", value=obs.workspace.attr_prometheus_endpoint,
                      description="Prometheus-compatible query endpoint (SigV4) for Grafana's data source")
            CfnOutput(self, "MetricsScraperId", value=obs.scraper.attr_scraper_id,
                      description="Put it in observability.scraper_id: the scraper's roles then trust it only")

    def acknowledge_findings(self) -> None:
        """Record why each remaining cdk-nag finding stands; call after everything is added to the cluster."""
        ic = self.inference_cluster
        acknowledge(ic.node_role, {
            "AwsSolutions-IAM4": "Nodes use the AWS managed EKS node policies (AmazonEKSWorkerNodePolicy, "
            "AmazonEC2ContainerRegistryPullOnly, AmazonEKS_CNI_Policy): AWS keeps them in step with what the "
            "kubelet and the VPC CNI need, and they grant no data access.",
        })
        if ic.cluster_autoscaler is not None:
            acknowledge(ic.cluster_autoscaler.role, {
                "AwsSolutions-IAM5": "The Cluster Autoscaler's describe calls (autoscaling:Describe*, "
                "ec2:DescribeInstanceTypes, ...) have no resource-level permissions and need '*'. Its two mutating "
                "calls are limited to Auto Scaling groups named eks-* whose eks:cluster-name tag is this cluster "
                "and that carry the autoscaler's discovery tag: EKS names and tags its managed node groups' "
                "groups so, and the groups' names are only known after EKS creates them.",
            })
        if ic.load_balancer_controller is not None:
            acknowledge(ic.load_balancer_controller.policy, {
                "AwsSolutions-IAM5": "The AWS Load Balancer Controller's own documented policy (kubernetes-sigs/"
                "aws-load-balancer-controller v3.5.0 docs/install/iam_policy.json), kept verbatim: the load "
                "balancers, target groups, listeners, rules and security groups it manages are named and created at "
                "run time, so their ARNs are wildcards; its mutating calls are conditioned on the "
                "elbv2.k8s.aws/cluster tag it puts on what it creates, and its Describe calls have no resource-level "
                "permissions.",
            })
            checkov_skip(ic.load_balancer_controller, "AWS::IAM::Policy", {
                "CKV_AWS_111": "The AWS Load Balancer Controller's documented policy, kept verbatim: it creates "
                               "security groups, load balancers and target groups whose ARNs exist only once it has "
                               "made them, and conditions its changes to them on the elbv2.k8s.aws/cluster tag.",
            })
        if self.logging.agent_role is not None:
            acknowledge(self.logging.agent_role, {
                "AwsSolutions-IAM5": "The log agent writes streams it names per node ('<group>:log-stream:*') in this "
                "cluster's four container log groups only; logs:DescribeLogGroups and the EC2 Describe calls have no "
                "resource-level permissions; cloudwatch:PutMetricData is limited to the ContainerInsights namespace.",
            })
        acknowledge(self.cluster.role, {
            "AwsSolutions-IAM4": "The control plane role uses AmazonEKSClusterPolicy, the policy EKS documents "
            "for it.",
        })
        kubectl = self.cluster.node.find_child("KubectlProvider")
        acknowledge(kubectl, {
            "AwsSolutions-IAM4": "aws_eks_v2's kubectl provider Lambdas use AWSLambdaBasicExecutionRole and "
            "AWSLambdaVPCAccessExecutionRole (their own logs and ENIs) and ECR read-only policies (Helm charts "
            "from OCI registries); aws-cdk-lib owns these roles.",
            "AwsSolutions-IAM5": "The provider framework may invoke any version of its own handler function "
            "('<handler arn>:*'): the wildcard spans versions of one function.",
            "AwsSolutions-L1": "aws-cdk-lib pins the kubectl provider's Lambda runtime; it moves with aws-cdk-lib.",
        })
        checkov_skip(kubectl, "AWS::Lambda::Function", {
            "CKV_AWS_115": "aws-cdk-lib's kubectl provider runs only during deploys; CloudFormation bounds its "
                           "concurrency.",
            "CKV_AWS_116": "Invoked synchronously by CloudFormation, which reports failures; a DLQ would stay empty.",
            "CKV_AWS_173": "Its environment holds paths and flags set by aws-cdk-lib, no secrets.",
            "CKV_AWS_117": "aws-cdk-lib places it in the VPC when the endpoint is private; with a public endpoint "
                           "it reaches the API from outside.",
        })
        checkov_skip(kubectl, "AWS::Logs::LogGroup", {
            "CKV_AWS_158": "aws-cdk-lib's kubectl provider logs hold deploy output, no data; CloudWatch Logs encrypts "
                           "them at rest.",
        })
        node_count = self.node.try_find_child("NodeCountProvider")
        if node_count is not None:
            acknowledge(node_count, {
                "AwsSolutions-IAM5": "The node-count function reads node groups and their Auto Scaling groups: "
                "autoscaling:DescribeAutoScalingGroups has no resource-level permissions and needs '*', and "
                "eks:DescribeNodegroup is limited to this cluster's named groups, whose ARNs end in an id EKS picks "
                "('<group>/*').",
            })
            checkov_skip(node_count, "AWS::Lambda::Function", {
                "CKV_AWS_115": "The node-count function runs once per node group whose bounds change in a deploy; "
                               "CloudFormation bounds its concurrency.",
                "CKV_AWS_116": "Invoked synchronously by CloudFormation, which reports failures; a DLQ would stay "
                               "empty.",
                "CKV_AWS_117": "It only calls the EKS and Auto Scaling APIs and needs no VPC access.",
            })
            checkov_skip(node_count, "AWS::Logs::LogGroup", {
                "CKV_AWS_158": "The node-count function logs one line of node counts per deploy, no data; CloudWatch "
                               "Logs encrypts them at rest.",
            })

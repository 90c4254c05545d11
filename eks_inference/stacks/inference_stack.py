"""Model repository, images, pod identities and the Kubernetes charts that serve and load-test models."""

from __future__ import annotations

from typing import Any

import cdk8s
from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from eks_inference.config import PlatformConfig, Processor
from eks_inference.constructs.inference_cluster import InferenceCluster
from eks_inference.constructs.model_image import ModelImage
from eks_inference.constructs.model_repository import (
    ARTIFACTS_PREFIX,
    MODELS_PREFIX,
    RESULTS_PREFIX,
    ModelRepository,
)
from eks_inference.k8s.load_test_chart import LoadTestChart, LoadTestPlan
from eks_inference.k8s.serving_chart import (
    LOADTEST_SERVICE_ACCOUNT,
    NAMESPACE,
    SERVE_SERVICE_ACCOUNT,
    ServingChart,
    ServingTarget,
    plan_targets,
)
from eks_inference.nag import acknowledge, checkov_skip


class InferenceStack(Stack):
    """Everything that runs on the cluster, deployed by the same ``cdk deploy``.

    The cdk8s charts are added through an imported handle of the cluster, so their manifests live in
    this stack: adding them to the cluster construct itself would place them in ClusterStack, which would
    then need this stack's bucket and images while this stack needs the cluster — a cycle.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: PlatformConfig,
                 inference_cluster: InferenceCluster, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.repository = ModelRepository(self, "ModelRepository")

        processors = sorted({p for m in config.models for p in m.processors}, key=lambda p: p.value)
        self.images: dict[str, ModelImage] = {}
        for p in processors:
            self.images[p.value] = ModelImage(self, f"{p.value.capitalize()}Image", image=p.value,
                                              image_uri=config.image_uris.get(p.value))
        if config.loadtest.run_id:
            self.images["loadtest"] = ModelImage(self, "LoadTestImage", image="loadtest",
                                                 image_uri=config.image_uris.get("loadtest"))

        src = inference_cluster.cluster
        self.serving_role = self._pod_role("ServingPodRole", "Serving pods: read models and artifacts, write artifacts")
        self.repository.grant_prefixes(self.serving_role, read=[MODELS_PREFIX], write=[ARTIFACTS_PREFIX])
        self.loadtest_role = self._pod_role("LoadTestPodRole", "Load-test pods: write and read results")
        self.repository.grant_prefixes(self.loadtest_role, read=[], write=[RESULTS_PREFIX])
        for cid, sa, role in (("ServingPodIdentity", SERVE_SERVICE_ACCOUNT, self.serving_role),
                              ("LoadTestPodIdentity", LOADTEST_SERVICE_ACCOUNT, self.loadtest_role)):
            eks.CfnPodIdentityAssociation(self, cid, cluster_name=src.cluster_name, namespace=NAMESPACE,
                                          service_account=sa, role_arn=role.role_arn)

        self.targets: list[ServingTarget] = plan_targets(
            config,
            images={Processor(k): v.image_uri for k, v in self.images.items() if k != "loadtest"},
            repository_uri=self.repository.uri,
            region=self.region,
        )
        k8s_app = cdk8s.App()
        self.serving_chart = ServingChart(k8s_app, "serving", targets=self.targets)
        self.load_test_chart: LoadTestChart | None = None
        cluster = eks.Cluster.from_cluster_attributes(
            self, "Cluster", cluster_name=src.cluster_name, kubectl_provider=src.kubectl_provider)
        self.serving_manifest = cluster.add_cdk8s_chart("ServingChart", self.serving_chart)
        # RayService is a KubeRay CRD: the operator's release must exist before the first RayService.
        self.serving_manifest.node.add_dependency(inference_cluster.kuberay_operator)
        for image in self.images.values():
            if image.asset is not None:
                self.serving_manifest.node.add_dependency(image.asset)
        if config.loadtest.run_id:
            plan = LoadTestPlan(spec=config.loadtest, image=self.images["loadtest"].image_uri,
                                results_uri=f"{self.repository.uri}/{RESULTS_PREFIX.rstrip('/')}",
                                region=self.region)
            self.load_test_chart = LoadTestChart(k8s_app, "loadtest", plan=plan, targets=self.targets)
            load_manifest = cluster.add_cdk8s_chart("LoadTestChart", self.load_test_chart)
            load_manifest.node.add_dependency(self.serving_manifest)

        CfnOutput(self, "ModelRepositoryUri", value=self.repository.uri)
        for name, image in self.images.items():
            CfnOutput(self, f"{name.capitalize()}ImageUri", value=image.image_uri)

    def _pod_role(self, construct_id: str, description: str) -> iam.Role:
        """An IAM role that EKS Pod Identity hands to one service account's pods."""
        return iam.Role(self, construct_id, description=description,
                        assumed_by=iam.SessionTagsPrincipal(iam.ServicePrincipal("pods.eks.amazonaws.com")))

    def acknowledge_findings(self) -> None:
        repo = self.repository
        acknowledge(repo.access_logs, {
            "AwsSolutions-S1": "This is the access-log bucket itself; logging it to itself would loop.",
        })
        for role in (self.serving_role, self.loadtest_role):
            acknowledge(role, {
                "AwsSolutions-IAM5": "Object-level access to one prefix of the model repository (models/*, "
                "artifacts/* or results/*) needs a wildcard under that prefix; no other bucket or key.",
            })
        provider = self.node.try_find_child("Cluster")
        if provider is not None:
            acknowledge(provider, {
                "AwsSolutions-IAM5": "Manifests are applied by the cluster's kubectl provider; see ClusterStack.",
            })
        checkov_skip(repo.access_logs, "AWS::S3::Bucket", {
            "CKV_AWS_18": "This is the access-log bucket itself; logging it to itself would loop.",
            "CKV_AWS_145": "S3 server access logging can only deliver to SSE-S3 buckets, not SSE-KMS.",
        })

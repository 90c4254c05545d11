"""Model repository, images, pod identities and the Kubernetes charts that serve and load-test models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cdk8s
from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from eks_inference.config import LoadBalancerScheme, PlatformConfig, Processor
from eks_inference.constructs.front_door_subnets import FrontDoorSubnets
from eks_inference.constructs.gcs_store import GcsStore
from eks_inference.constructs.inference_cluster import InferenceCluster
from eks_inference.constructs.model_image import ModelImage
from eks_inference.constructs.model_repository import ARTIFACTS_PREFIX, MODELS_PREFIX, RESULTS_PREFIX, ModelRepository
from eks_inference.constructs.registry_scanning import RegistryScanning
from eks_inference.constructs.trust import pod_identity_role
from eks_inference.k8s.capacity import COREDNS, PodRequest, check_system_group
from eks_inference.k8s.compile_chart import CompileChart
from eks_inference.k8s.front_door_chart import FrontDoorChart
from eks_inference.k8s.gcs_token_chart import SERVICE_ACCOUNT as GCS_TOKEN_SERVICE_ACCOUNT
from eks_inference.k8s.gcs_token_chart import GcsTokenChart, GcsTokenSync
from eks_inference.k8s.load_test_chart import LoadTestChart, LoadTestPlan
from eks_inference.k8s.ray_service import GcsFaultTolerance
from eks_inference.k8s.serving_chart import (
    COMPILE_SERVICE_ACCOUNT,
    LOADTEST_SERVICE_ACCOUNT,
    NAMESPACE,
    SERVE_SERVICE_ACCOUNT,
    SERVICE_ACCOUNT_NAMESPACES,
    ServingChart,
    ServingTarget,
    plan_canaries,
    plan_targets,
)
from eks_inference.nag import acknowledge, checkov_skip
from eks_inference.tables.neuron import NEURON_METADATA, NEURON_SDK


class InferenceStack(Stack):
    """Everything that runs on the cluster, deployed by the same ``cdk deploy``.

    The cdk8s charts are added through an imported handle of the cluster, so their manifests live in
    this stack: adding them to the cluster construct itself would place them in ClusterStack, which would
    then need this stack's bucket and images while this stack needs the cluster — a cycle.

    Order matters on a first deploy: CloudFormation creates what nothing orders in parallel, and a pod
    admitted before its service account's Pod Identity association exists never gets credentials (the
    EKS Pod Identity webhook mutates pods only at admission). Each chart therefore waits for the
    associations and role policies of its service accounts, and for the operators, add-ons (the VPC CNI
    that enforces its NetworkPolicies) and images its pods need.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: PlatformConfig,
                 inference_cluster: InferenceCluster, metrics_cidrs: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.repository = ModelRepository(self, "ModelRepository")

        processors = sorted({p for m in config.models for p in m.processors}, key=lambda p: p.value)
        self.images: dict[str, ModelImage] = {}
        for p in processors:
            self.images[p.value] = ModelImage(self, f"{p.value.capitalize()}Image", image=p.value,
                                              image_uri=config.image_uris.get(p.value), bases=config.images)
        if config.loadtest.run_id:
            self.images["loadtest"] = ModelImage(self, "LoadTestImage", image="loadtest",
                                                 image_uri=config.image_uris.get("loadtest"))
        # Every image cdk deploy pushes is scanned on push (config image_scanning; "account" leaves it alone).
        self.registry_scanning = (RegistryScanning.unless_account(self, "RegistryScanning",
                                                                  scanning=config.image_scanning)
                                  if any(image.asset for image in self.images.values()) else None)

        src = inference_cluster.cluster
        # Replicas only read what they load; the compile Jobs alone may add artifacts (create-only).
        self.serving_role = self._pod_role("ServingPodRole", "Serving pods: read models and artifacts",
                                           SERVE_SERVICE_ACCOUNT, src.cluster_arn)
        self.repository.grant_prefixes(self.serving_role, read=[MODELS_PREFIX, ARTIFACTS_PREFIX], write=[])
        self.compile_role = self._pod_role("CompilePodRole", "Compile Jobs: read models, add compiled artifacts",
                                           COMPILE_SERVICE_ACCOUNT, src.cluster_arn)
        self.repository.grant_prefixes(self.compile_role, read=[MODELS_PREFIX], write=[ARTIFACTS_PREFIX])
        self.loadtest_role = self._pod_role("LoadTestPodRole", "Load-test pods: write and read results",
                                            LOADTEST_SERVICE_ACCOUNT, src.cluster_arn)
        self.repository.grant_prefixes(self.loadtest_role, read=[], write=[RESULTS_PREFIX])
        self.repository.grant_verification_reads(self.loadtest_role)  # clients run `loadtest run --verify`
        self.pod_identities: dict[str, eks.CfnPodIdentityAssociation] = {}
        for cid, sa, role in (("ServingPodIdentity", SERVE_SERVICE_ACCOUNT, self.serving_role),
                              ("LoadTestPodIdentity", LOADTEST_SERVICE_ACCOUNT, self.loadtest_role),
                              ("CompilePodIdentity", COMPILE_SERVICE_ACCOUNT, self.compile_role)):
            self.pod_identities[sa] = eks.CfnPodIdentityAssociation(
                self, cid, cluster_name=src.cluster_name, namespace=SERVICE_ACCOUNT_NAMESPACES[sa], service_account=sa,
                role_arn=role.role_arn)

        # Ray's GCS state outside the heads, when the environment asks for it (ray.gcs_fault_tolerance).
        self.gcs_store: GcsStore | None = None
        gcs: GcsFaultTolerance | None = None
        if config.ray.gcs_fault_tolerance:
            self.gcs_store = GcsStore(self, "GcsStore", vpc=src.vpc, admit=src.cluster_security_group,
                                      node_type=config.ray.redis_node_type, replicas=config.ray.redis_replicas)
            gcs = GcsFaultTolerance(host=self.gcs_store.host, port=self.gcs_store.port,
                                    cidrs=tuple(self.gcs_store.subnet_cidrs))
            # The Job that copies the auth token into the Secret the heads read (k8s/gcs_token_chart.py) may read
            # that one secret.
            self.gcs_token_role = pod_identity_role(
                self, "GcsTokenSyncPodRole", description="GCS token sync: read the GCS store's auth token",
                cluster_arn=src.cluster_arn, namespace=NAMESPACE, service_account=GCS_TOKEN_SERVICE_ACCOUNT)
            self.gcs_store.grant_token_read(self.gcs_token_role)
            self.pod_identities[GCS_TOKEN_SERVICE_ACCOUNT] = eks.CfnPodIdentityAssociation(
                self, "GcsTokenSyncPodIdentity", cluster_name=src.cluster_name, namespace=NAMESPACE,
                service_account=GCS_TOKEN_SERVICE_ACCOUNT, role_arn=self.gcs_token_role.role_arn)
        self.targets: list[ServingTarget] = plan_targets(
            config,
            images={Processor(k): v.image_uri for k, v in self.images.items() if k != "loadtest"},
            repository_uri=self.repository.uri,
            region=self.region,
            gcs_store=gcs,
        )
        # A model's canary (config `canary`, written by `eks-inference rollout`): served and routed beside its targets.
        self.canaries: list[ServingTarget] = plan_canaries(
            config,
            images={Processor(k): v.image_uri for k, v in self.images.items() if k != "loadtest"},
            repository_uri=self.repository.uri,
            region=self.region,
            gcs_store=gcs,
        )
        plan: LoadTestPlan | None = None
        if config.loadtest.run_id:
            image = self.images["loadtest"]
            plan = LoadTestPlan(
                spec=config.loadtest, image=image.image_uri,
                results_uri=f"{self.repository.uri}/{RESULTS_PREFIX.rstrip('/')}", region=self.region,
                front_door=config.front_door,
                token_ids={image.image_uri: image.identity,
                           self.repository.uri: f"s3://{self.repository.node.path}"})
        self._check_system_capacity(config, inference_cluster)

        # The front door's load balancer sits where no pod can: the public subnets, or (internal) subnets of its own.
        door = config.front_door
        door_subnet_ids: list[str] = []
        door_cidrs: list[str] = []
        self.front_door_subnets: FrontDoorSubnets | None = None
        if door.enabled and door.scheme is LoadBalancerScheme.INTERNET_FACING:
            public = src.vpc.public_subnets
            door_subnet_ids, door_cidrs = [s.subnet_id for s in public], [s.ipv4_cidr_block for s in public]
        elif door.enabled:
            self.front_door_subnets = FrontDoorSubnets(self, "FrontDoorSubnets", vpc=src.vpc,
                                                       vpc_cidr=config.vpc_cidr)
            door_subnet_ids, door_cidrs = self.front_door_subnets.subnet_ids, self.front_door_subnets.cidrs

        k8s_app = cdk8s.App()
        self.serving_chart = ServingChart(k8s_app, "serving", targets=self.targets, metrics_cidrs=metrics_cidrs,
                                          api_server_cidrs=inference_cluster.api_server_cidrs,
                                          front_door_cidrs=door_cidrs, canaries=self.canaries)
        self.load_test_chart: LoadTestChart | None = None
        cluster = eks.Cluster.from_cluster_attributes(
            self, "Cluster", cluster_name=src.cluster_name, kubectl_provider=src.kubectl_provider)
        # Namespace and service accounts; every target's pods need them.
        self.serving_manifest = cluster.add_cdk8s_chart("ServingChart", self.serving_chart)
        # The heads' Secret is filled before the first RayService is applied (its heads would wait for it anyway).
        self.gcs_token_manifest: Construct | None = None
        if self.gcs_store is not None:
            self.gcs_token_manifest = self._gcs_token_manifest(k8s_app, cluster, inference_cluster)
        self.target_manifests: dict[str, eks.KubernetesManifest] = {}
        for chart in self.serving_chart.target_charts:
            # overwrite: created with `kubectl apply`, so objects left by an earlier layout are adopted.
            manifest = eks.KubernetesManifest(self, f"{chart.node.id}Serving", cluster=cluster,
                                              manifest=chart.to_json(), overwrite=True)
            manifest.node.add_dependency(self.serving_manifest)
            # RayService is a KubeRay CRD: the operator's release must exist before the first RayService; its
            # NetworkPolicy means nothing until the VPC CNI enforces it.
            manifest.node.add_dependency(inference_cluster.kuberay_operator, inference_cluster.vpc_cni,
                                         inference_cluster.pod_identity_agent)
            self._wait_for_identity(manifest, SERVE_SERVICE_ACCOUNT, self.serving_role)
            if self.gcs_token_manifest is not None:
                manifest.node.add_dependency(self.gcs_token_manifest)
            image_asset = self.images[chart.target.processor.value].asset
            if image_asset is not None:  # published before this stack deploys; stated for the reader
                manifest.node.add_dependency(image_asset)
            self.target_manifests[chart.target.name] = manifest
        for canary_chart in self.serving_chart.canary_charts:
            # After its target, whose NetworkPolicies admit the canary's pods (they carry the target's label).
            canary_manifest = eks.KubernetesManifest(self, f"{canary_chart.node.id}Serving", cluster=cluster,
                                                     manifest=canary_chart.to_json(), overwrite=True)
            stable = canary_chart.target.name.removesuffix("-canary")
            canary_manifest.node.add_dependency(self.target_manifests[stable])
            self.target_manifests[canary_chart.target.name] = canary_manifest
        # The front door: its CRDs come with the load balancer controller (ClusterStack), its routes name the targets'
        # serve Services, which KubeRay creates once each RayService is up.
        self.front_door_chart: FrontDoorChart | None = None
        if door.enabled:
            controller = inference_cluster.add_load_balancer_controller()
            self.front_door_chart = FrontDoorChart(k8s_app, "front-door", door=door, targets=self.targets,
                                                   subnet_ids=door_subnet_ids, canaries=self.canaries,
                                                   canary_percent=config.rollout.canary_percent)
            front_door_manifest = cluster.add_cdk8s_chart("FrontDoorChart", self.front_door_chart)
            front_door_manifest.node.add_dependency(self.serving_manifest, controller.chart)
            # One resource per target and per model, so that dropping either deletes its objects (see RouteChart).
            for tg_chart in self.front_door_chart.target_group_charts:
                tg_manifest = eks.KubernetesManifest(self, f"{tg_chart.node.id}FrontDoor", cluster=cluster,
                                                     manifest=tg_chart.to_json(), overwrite=True)
                tg_manifest.node.add_dependency(front_door_manifest, self.target_manifests[tg_chart.target.name])
            for route_chart in self.front_door_chart.route_charts:
                route_manifest = eks.KubernetesManifest(self, f"{route_chart.node.id}FrontDoor", cluster=cluster,
                                                        manifest=route_chart.to_json(), overwrite=True)
                route_manifest.node.add_dependency(front_door_manifest,
                                                   *(self.target_manifests[n] for n in route_chart.target_names))
        # One compile Job per target writes the artifact its replicas wait for.
        self.compile_chart = CompileChart(
            k8s_app, "compile", targets=[*self.targets, *self.canaries], region=self.region,
            token_ids={**{i.image_uri: i.identity for i in self.images.values()},
                       self.repository.uri: f"s3://{self.repository.node.path}"})
        self.compile_manifest = cluster.add_cdk8s_chart("CompileChart", self.compile_chart)
        self.compile_manifest.node.add_dependency(self.serving_manifest, inference_cluster.vpc_cni,
                                                  inference_cluster.pod_identity_agent,
                                                  *(i.asset for i in self.images.values() if i.asset is not None))
        self._wait_for_identity(self.compile_manifest, COMPILE_SERVICE_ACCOUNT, self.compile_role)
        if plan is not None:
            self.load_test_chart = LoadTestChart(k8s_app, "loadtest", plan=plan, targets=self.targets)
            load_manifest = cluster.add_cdk8s_chart("LoadTestChart", self.load_test_chart)
            load_manifest.node.add_dependency(self.serving_manifest, *self.target_manifests.values(),
                                              inference_cluster.vpc_cni, inference_cluster.pod_identity_agent)
            self._wait_for_identity(load_manifest, LOADTEST_SERVICE_ACCOUNT, self.loadtest_role)
            if self.images["loadtest"].asset is not None:
                load_manifest.node.add_dependency(self.images["loadtest"].asset)

        CfnOutput(self, "ModelRepositoryUri", value=self.repository.uri)
        if self.gcs_store is not None:
            # Where the GCS store's auth token is; the gcs-token-sync Job copies it into the Kubernetes Secret the
            # RayServices reference.
            CfnOutput(self, "GcsStoreAuthTokenArn", value=self.gcs_store.auth_token.secret_arn)
            CfnOutput(self, "GcsStoreAddress", value=self.gcs_store.address)
        for name, image in self.images.items():
            CfnOutput(self, f"{name.capitalize()}ImageUri", value=image.image_uri)
        neuron_models = sorted({t.model.name for t in self.targets if t.processor is Processor.INFERENTIA})
        if neuron_models:
            # The SDK the Inferentia2 image and its compile Jobs use, for `eks-inference diff` to compare across
            # deploys (a new one needs new compiled artifacts before a replica runs it).
            self.template_options.metadata = {NEURON_METADATA: {
                "sdk": NEURON_SDK.version, "neuronx_cc": NEURON_SDK.neuronx_cc, "models": neuron_models}}

    def _gcs_token_manifest(self, k8s_app: cdk8s.App, cluster: eks.ICluster,
                            inference_cluster: InferenceCluster) -> Construct:
        """The sync runs in the first target's image, where its head runs (a head's node group always exists)."""
        assert self.gcs_store is not None
        head = self.targets[0].ray_service.head.pod
        image = self.images[self.targets[0].processor.value]
        secret_arn = self.gcs_store.auth_token.secret_arn
        chart = GcsTokenChart(
            k8s_app, "gcs-token", api_server_cidrs=inference_cluster.api_server_cidrs,
            sync=GcsTokenSync(secret_arn=secret_arn, image=head.image, region=self.region,
                              node_selector=head.node_selector),
            token_ids={image.image_uri: image.identity, secret_arn: self.gcs_store.auth_token.node.path})
        manifest = cluster.add_cdk8s_chart("GcsTokenChart", chart)
        manifest.node.add_dependency(self.serving_manifest, inference_cluster.vpc_cni,
                                     inference_cluster.pod_identity_agent)
        if image.asset is not None:
            manifest.node.add_dependency(image.asset)
        self._wait_for_identity(manifest, GCS_TOKEN_SERVICE_ACCOUNT, self.gcs_token_role)
        return manifest

    def _wait_for_identity(self, manifest: Construct, service_account: str, role: iam.Role) -> None:
        """The association and the role's policy must exist before any pod of ``service_account`` does."""
        manifest.node.add_dependency(self.pod_identities[service_account])
        policy = role.node.try_find_child("DefaultPolicy")
        if policy is not None:
            manifest.node.add_dependency(policy)

    def _check_system_capacity(self, config: PlatformConfig, inference_cluster: InferenceCluster) -> None:
        """Operators and the Ray heads placed there must fit the system nodes at their configured size: the
        Cluster Autoscaler runs on them, and pods that do not fit wait until their deadline. A run's load-test
        pods go to nodes of their own (``InferenceCluster.load_test_group``)."""
        system = next(g for g in config.enabled_node_groups if g.processor is None)
        heads = [PodRequest.of(f"Ray head of {t.name}", t.ray_service.head.requests) for t in self.targets
                 if t.ray_service.head.pod.node_selector.get("eks-inference/processor") == "system"]
        base = [*inference_cluster.system_pods, *COREDNS, *heads]
        check_system_group(system, base=base, extra=[], extra_what="system pods (operators and Ray heads)",
                           extra_fix="move work off the system nodes")
        # An image change upgrades every RayService of its processor at once: a second head each, for a while.
        check_system_group(system, base=base, extra=[PodRequest(f"{h.name} (new cluster)", h.cpu_m, h.memory_mib)
                                                     for h in heads],
                           extra_what="a NewCluster upgrade (a second Ray head per RayService)",
                           extra_fix="move work off the system nodes", at_max_size=True)

    def _pod_role(self, construct_id: str, description: str, service_account: str, cluster_arn: str) -> iam.Role:
        """An IAM role that EKS Pod Identity hands only to ``service_account``'s pods in this cluster's namespace."""
        return pod_identity_role(self, construct_id, description=description, cluster_arn=cluster_arn,
                                 namespace=SERVICE_ACCOUNT_NAMESPACES[service_account],
                                 service_account=service_account)

    def acknowledge_findings(self) -> None:
        repo = self.repository
        acknowledge(repo.access_logs, {
            "AwsSolutions-S1": "This is the access-log bucket itself; logging it to itself would loop.",
        })
        for role in (self.serving_role, self.loadtest_role, self.compile_role):
            acknowledge(role, {
                "AwsSolutions-IAM5": "Object-level access to one prefix of the model repository (models/*, "
                "artifacts/* or results/*) needs a wildcard under that prefix; no other bucket or key.",
            })
        provider = self.node.try_find_child("Cluster")
        if provider is not None:
            acknowledge(provider, {
                "AwsSolutions-IAM5": "Manifests are applied by the cluster's kubectl provider; see ClusterStack.",
            })
        if self.gcs_store is not None:
            acknowledge(self.gcs_store, {
                "AwsSolutions-SMG4": "The GCS store's auth token is rotated by hand (docs/operate.md, \"Losing the Ray "
                "head\"): ElastiCache, the Kubernetes Secret (the gcs-token-sync CronJob) and every Ray head must "
                "change together.",
                "AwsSolutions-AEC4": "ray.redis_replicas is 0 in this environment: a single node, no Multi-AZ.",
            })
        checkov_skip(repo.access_logs, "AWS::S3::Bucket", {
            "CKV_AWS_18": "This is the access-log bucket itself; logging it to itself would loop.",
            "CKV_AWS_145": "S3 server access logging can only deliver to SSE-S3 buckets, not SSE-KMS.",
        })

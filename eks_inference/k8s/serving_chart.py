"""The serving chart: one RayService per model × processor, with its NetworkPolicy and PodDisruptionBudget."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cdk8s import Chart
from constructs import Construct

from eks_inference.compile.family import compile_now_command
from eks_inference.config import (
    AUTOSCALER_SIDECAR_CPU_MILLIS,
    AUTOSCALER_SIDECAR_MEMORY_MIB,
    CANARY_SUFFIX,
    HEAD_CPU_MILLIS,
    HEAD_MEMORY_MIB,
    RAY_VERSION,
    ConfigError,
    ModelSpec,
    PlatformConfig,
    Processor,
    worker_pod_requests,
)
from eks_inference.costs import target_placement
from eks_inference.k8s.kuberay_operator import OPERATOR as KUBERAY_OPERATOR
from eks_inference.k8s.objects import (
    PART_OF,
    EgressRule,
    IngressRule,
    Peer,
    PodSecurity,
    api_server_egress,
    aws_egress,
    default_deny,
    dns_egress,
    emit,
    namespace,
    network_policy,
    pod_disruption_budget,
    service_account,
)
from eks_inference.k8s.pod import Resources
from eks_inference.k8s.ray_service import (
    HEAD_SERVICE_ACCOUNT,
    MIB,
    RAY_PORTS,
    SERVE_PORT,
    AutoscalerOptions,
    GcsFaultTolerance,
    HeadGroup,
    RayPod,
    RayServiceSpec,
    Toleration,
    WorkerGroup,
    api_access_volume,
)
from eks_inference.k8s.rollout import ROLLOUT_LABEL
from eks_inference.serving.serve_config import (
    RAY_LOG_ENV,
    model_repository_uris,
    ray_cluster_env,
    render_serve_config,
)

NAMESPACE = "eks-inference"
LOADTEST_NAMESPACE = "eks-inference-loadtest"
"""The load-test Jobs run in a namespace of their own, so that the RayServices' policies can admit them by namespace:
anyone who may create a pod in the serving namespace could give it any label, but only cluster administrators label
namespaces."""
SERVE_SERVICE_ACCOUNT = "serve"
LOADTEST_SERVICE_ACCOUNT = "loadtest"
COMPILE_SERVICE_ACCOUNT = "compile"
"""The compile Jobs' (:mod:`eks_inference.k8s.compile_chart`): the only service account whose role may add artifacts."""
PROCESSOR_LABEL = "eks-inference/processor"
SERVICE_LABEL = "eks-inference/service"
ROLE_LABEL = "eks-inference/role"
RAY_ROLE_LABEL = "eks-inference/ray-role"
SERVING_CLIENT_LABEL = "eks-inference/serving-client"
"""Namespace label: every pod of a namespace labelled ``eks-inference/serving-client=true`` may call the models' API on
the serve port (the load-test namespace carries it; label your own clients' namespace to add them)."""
SERVICE_ACCOUNT_NAMESPACES = {SERVE_SERVICE_ACCOUNT: NAMESPACE, HEAD_SERVICE_ACCOUNT: NAMESPACE,
                              LOADTEST_SERVICE_ACCOUNT: LOADTEST_NAMESPACE, COMPILE_SERVICE_ACCOUNT: NAMESPACE}
"""Where each service account lives: its Pod Identity association and its role's trust name the same namespace."""
NEURON_SCHEDULER = "neuron-scheduler"

_EXTENDED = {Processor.INFERENTIA: "aws.amazon.com/neuroncore", Processor.GPU: "nvidia.com/gpu"}
_TAINTS = {Processor.INFERENTIA: "aws.amazon.com/neuron", Processor.GPU: "nvidia.com/gpu"}

WORKER_OBJECT_STORE_BYTES = 1024 * MIB
"""Serve passes requests and batches between actors in-process or as small objects; 1 GiB of object store per
worker is ample and, with /dev/shm sized to it, leaves the rest of the pod's memory (``WORKER_MEMORY_GIB``) to the
model."""
HEAD_OBJECT_STORE_BYTES = 512 * MIB
"""The head runs no replicas, only the Serve controller and proxy."""


def service_name(model: ModelSpec, processor: Processor) -> str:
    return f"{model.name}-{processor.value}"


COMPILE_TARGET_LABEL = "eks-inference/compile-target"
"""On each compile Job and its pods: the target whose artifact it compiles (:mod:`eks_inference.k8s.compile_chart`)."""


def compile_hint(name: str, namespace_: str = NAMESPACE, *, family: str | None = None) -> str:
    """Where a replica waiting for its artifact points: the compile Job of its target, or for a family's target its
    compile CronJob and the command that runs it now (:mod:`eks_inference.k8s.compile_chart`)."""
    logs = f"kubectl -n {namespace_} logs -l {COMPILE_TARGET_LABEL}={name}"
    if family is not None:
        return (f"the compile CronJob of {name}, at its next run ({logs}; to run it now: "
                f"{compile_now_command(family, namespace_)})")
    return f"the compile Job of {name} ({logs})"


def serve_url(model: ModelSpec, processor: Processor, namespace_: str = NAMESPACE) -> str:
    """In-cluster URL of a model's API: KubeRay fronts each RayService with ``<name>-serve-svc``."""
    return f"http://{service_name(model, processor)}-serve-svc.{namespace_}.svc.cluster.local:{SERVE_PORT}/{model.name}"


@dataclass(frozen=True)
class ServingTarget:
    """One model on one processor, with everything the load test and the report need to know about it."""

    model: ModelSpec
    processor: Processor
    name: str
    url: str
    instance_type: str
    nodes: int
    serve_config: Mapping[str, Any]
    ray_service: RayServiceSpec
    placement: str = ""
    """Every pod of the target at its share of its node (:func:`eks_inference.costs.target_placement`), as
    ``loadtest run --placement`` takes it: the report prices the target from it."""


def plan_targets(config: PlatformConfig, *, images: Mapping[Processor, str], repository_uri: str,
                 region: str, namespace_: str = NAMESPACE,
                 gcs_store: GcsFaultTolerance | None = None) -> list[ServingTarget]:
    """Pure planning: the RayService of every model × processor in the config (no cdk8s involved).

    :param gcs_store: the store every RayService keeps its GCS state in; required when the config asks for
        ``ray.gcs_fault_tolerance`` (the stacks provision it), ignored otherwise.
    """
    if config.ray.gcs_fault_tolerance and gcs_store is None:
        raise ConfigError("ray.gcs_fault_tolerance: true, but no GCS store was given to plan the RayServices; "
                          "pass the store the stacks provision (GcsStore), or set gcs_fault_tolerance to false")
    gcs = gcs_store if config.ray.gcs_fault_tolerance else None
    return [_plan_target(config, model, processor, images=images, repository_uri=repository_uri, region=region,
                         namespace_=namespace_, gcs=gcs)
            for model in config.models for processor in model.processors]


def plan_canaries(config: PlatformConfig, *, images: Mapping[Processor, str], repository_uri: str,
                  region: str, namespace_: str = NAMESPACE,
                  gcs_store: GcsFaultTolerance | None = None) -> list[ServingTarget]:
    """Pure planning: for each model with a ``canary``, the canary of each of its targets, ``<target>-canary``.

    Built by the same function as the target itself from the model at the canary's revision and digest, so the serving
    shape is the target's; it differs in its name, its weights (serve config and compile hint), a worker group that
    starts at one replica (the canary takes a slice, not the load) and the :data:`ROLLOUT_LABEL` on the RayService.
    Its pods carry the target's :data:`SERVICE_LABEL`, so the target's NetworkPolicies admit them as the target's own,
    and its Serve application is the model's, so the front door's ``/{model}`` path and the alerts' ``application``
    label are the model's. :func:`eks_inference.k8s.rollout.canary_ray_service` makes the same object from a deployed
    target (a test keeps them equal).
    """
    gcs = gcs_store if config.ray.gcs_fault_tolerance else None
    out = []
    for model in config.models:
        if model.canary is None:
            continue
        revised = replace(model, revision=model.canary.revision, weights_sha256=model.canary.weights_sha256,
                          canary=None)
        for processor in model.processors:
            t = _plan_target(config, revised, processor, images=images, repository_uri=repository_uri, region=region,
                             namespace_=namespace_, gcs=gcs, canary=True)
            out.append(t)
    return out


def _plan_target(config: PlatformConfig, model: ModelSpec, processor: Processor, *, images: Mapping[Processor, str],
                 repository_uri: str, region: str, namespace_: str, gcs: GcsFaultTolerance | None,
                 canary: bool = False) -> ServingTarget:
    model_uri, artifact_uri = model_repository_uris(repository_uri, model)
    if processor not in images:
        raise ConfigError(f"images: no image for processor {processor.value!r}; build it or set image_uris")
    group = config.node_group_for(processor)
    service = service_name(model, processor)
    name = f"{service}{CANARY_SUFFIX}" if canary else service
    # Replicas only read: the compile Job (a family's: CronJob) of the target writes what they load.
    hint = compile_hint(name, namespace_, family=model.name if model.family is not None else None)
    serve_config = render_serve_config(model, processor, model_uri=model_uri, artifact_uri=artifact_uri,
                                       compile_on_miss=False, compile_hint=hint)
    rs = _ray_service(name, namespace_, model, processor, image=images[processor], serve_config=serve_config,
                      region=region, gcs=gcs, service=service,
                      head_on_system=config.head_node_group(processor).processor is None)
    if canary:
        (w,) = rs.workers
        rs = replace(rs, labels={**rs.labels, ROLLOUT_LABEL: "canary"},
                     workers=[replace(w, replicas=1, min_replicas=min(w.min_replicas, 1))])
    worker_nodes = rs.workers[0].replicas if not model.shares_node else 1
    return ServingTarget(
        model=model, processor=processor, name=name, url=serve_url(model, processor, namespace_),
        instance_type=group.instance_types[0], nodes=worker_nodes, serve_config=serve_config,
        ray_service=rs, placement=target_placement(config, model, processor).to_arg(),
    )


def _resources(cpu_m: int, memory_mib: int, cpu_limit: str | None = None) -> Resources:
    """Requests from config's figures (what :mod:`eks_inference.costs` prices), written as a person would."""
    cpu = f"{cpu_m // 1000}" if cpu_m % 1000 == 0 else f"{cpu_m}m"
    memory = f"{memory_mib // 1024}Gi" if memory_mib % 1024 == 0 else f"{memory_mib}Mi"
    return Resources(cpu=cpu, cpu_limit=cpu_limit, memory=memory)


def _ray_service(name: str, namespace_: str, model: ModelSpec, processor: Processor, *, image: str,
                 serve_config: Mapping[str, Any], region: str, head_on_system: bool,
                 gcs: GcsFaultTolerance | None = None, service: str | None = None) -> RayServiceSpec:
    """:param service: the :data:`SERVICE_LABEL` of its objects and pods; default ``name`` (a canary: its target's)."""
    s = model.serving
    labels = {**PART_OF, "app.kubernetes.io/name": "eks-inference", "app.kubernetes.io/component": "serving",
              SERVICE_LABEL: service or name, "eks-inference/model": model.name, PROCESSOR_LABEL: processor.value}
    # RAY_CLUSTER_ENV moves HTTP from Ray's Python proxy to HAProxy (the setting local mode measured faster); a
    # model-aware family keeps the Python proxy, whose router sends a member's requests to a replica holding it.
    model_aware = model.family is not None and model.family.model_aware
    env = {**ray_cluster_env(model_aware=model_aware), **RAY_LOG_ENV, "AWS_REGION": region,
           "AWS_DEFAULT_REGION": region, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    ray_cpus = max(1, math.ceil(s.cpus_per_replica))
    # One Serve replica per worker pod: Kubernetes places and counts replicas; Ray batches inside each. The Ray
    # autoscaler therefore keeps as many worker pods as Serve wants replicas, within the same bounds. The pod's size
    # is the one config checks against the node group's instances.
    req = worker_pod_requests(s, processor)
    # Accelerators go only into the container limits; KubeRay turns those into `neuron_cores` / `num-gpus`.
    extended: dict[str, int] = {}
    tolerations: tuple[Toleration, ...] = ()
    scheduler = None
    if processor in _EXTENDED:
        tolerations = (Toleration(key=_TAINTS[processor]),)
    if processor is Processor.INFERENTIA:
        extended[_EXTENDED[processor]] = req.neuron_cores
        env["NEURON_RT_NUM_CORES"] = str(req.neuron_cores)
        # Cores spanning Neuron devices must be contiguous; the scheduler extension places such pods.
        scheduler = NEURON_SCHEDULER if req.neuron_cores > 2 else None
    elif processor is Processor.GPU:
        extended[_EXTENDED[processor]] = req.gpus
    worker_labels = {**labels, RAY_ROLE_LABEL: "worker"}
    if not model.shares_node:
        worker_labels["eks-inference/whole-node"] = "true"
    lo, hi = s.replicas
    worker = WorkerGroup(
        name=processor.value,
        replicas=lo,
        min_replicas=lo,
        max_replicas=hi,
        ray_cpus=ray_cpus,
        pod=RayPod(
            image=image,
            resources=Resources(cpu=str(req.cpu), memory=f"{req.memory_gib}Gi", extended=extended),
            node_selector={PROCESSOR_LABEL: processor.value},
            tolerations=tolerations,
            service_account=SERVE_SERVICE_ACCOUNT,
            env=env,
            labels=worker_labels,
            object_store_bytes=WORKER_OBJECT_STORE_BYTES,
            scheduler_name=scheduler,
            anti_affinity_label=None if model.shares_node else ("eks-inference/whole-node", "true"),
        ),
    )
    head = HeadGroup(pod=RayPod(
        image=image,
        resources=_resources(HEAD_CPU_MILLIS, HEAD_MEMORY_MIB),
        # The head runs the processor's image; it lands on system nodes when their architecture matches
        # (x86 system nodes host Inferentia, GPU and x86 CPU heads), otherwise on its processor's nodes.
        node_selector={PROCESSOR_LABEL: "system" if head_on_system else processor.value},
        # Its own account, without AWS credentials: the head runs the Serve controller and the route index, not
        # the replicas that read S3. Only its autoscaler sidecar mounts a Kubernetes token.
        service_account=HEAD_SERVICE_ACCOUNT,
        env={**env, **(gcs.head_env() if gcs else {})},
        labels={**labels, RAY_ROLE_LABEL: "head"},
        object_store_bytes=HEAD_OBJECT_STORE_BYTES,
        extra_volumes=(api_access_volume(),),
    ), autoscaler=AutoscalerOptions(resources=_resources(AUTOSCALER_SIDECAR_CPU_MILLIS, AUTOSCALER_SIDECAR_MEMORY_MIB,
                                                        cpu_limit="500m")))
    return RayServiceSpec(name=name, namespace=namespace_, labels=labels, ray_version=RAY_VERSION,
                          serve_config=serve_config, head=head, workers=[worker],
                          initializing_timeout_s=s.initializing_timeout_s, gcs_fault_tolerance=gcs)


class TargetChart(Chart):
    """One target's RayService, its NetworkPolicy and its PodDisruptionBudget.

    Each target is a manifest resource of its own in the stack, so that dropping a model or processor from
    config deletes its objects: CloudFormation deletes the resource and the handler runs ``kubectl delete``.
    Inside one shared manifest they would stay behind, because ``kubectl apply --prune`` prunes only a
    fixed list of kinds (kubectl's default prune allowlist) that has no RayService, NetworkPolicy or PDB.

    Its NetworkPolicies admit, to every pod of the RayService: on every port, the pods of the same RayService; on
    the serve port, the pods of namespaces labelled :data:`SERVING_CLIENT_LABEL` (the load-test namespace among
    them); on the metrics port (Ray's and Serve's Prometheus endpoint), the managed scraper's subnets
    (``metrics_cidrs``) and the load-test namespace, whose client 0 reads each step's server-side figures there. To
    the head only: the KubeRay operator's pods, on the dashboard (Serve's status and config) and the serve port
    (its proxy health check). Out of every pod, the pods of the same RayService; out of the head, the API server
    (its autoscaler). DNS and AWS come from the namespace's own policies (:class:`ServingChart`). With a front door,
    the serve port also admits ``front_door_cidrs``, the subnets of its load balancer.
    """

    def __init__(self, scope: Construct, construct_id: str, *, target: ServingTarget, api_server_cidrs: Sequence[str],
                 namespace_: str = NAMESPACE, metrics_cidrs: Sequence[str] = (),
                 loadtest_namespace: str = LOADTEST_NAMESPACE, front_door_cidrs: Sequence[str] = ()) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.target = t = target
        emit(self, "RayService", t.ray_service.to_dict())
        own = {SERVICE_LABEL: t.name}
        # The front door's load balancer sends requests and health checks to pod IPs from its own subnets.
        front_door = ([IngressRule(peers=[Peer(cidr=c) for c in front_door_cidrs], ports=[SERVE_PORT])]
                      if front_door_cidrs else [])
        # The name predates the egress rules; kept, because kubectl never prunes a NetworkPolicy and a renamed one
        # would leave the old allow-list in force beside the new.
        emit(self, "NetworkPolicy", network_policy(
            f"{t.name}-ingress", namespace_, pod_labels=own, labels=own,
            ingress=[
                IngressRule(peers=[Peer(pod_labels=own)]),
                IngressRule(peers=[Peer(namespace_labels={SERVING_CLIENT_LABEL: "true"})], ports=[SERVE_PORT]),
                IngressRule(peers=[Peer(namespace_name=loadtest_namespace), *(Peer(cidr=c) for c in metrics_cidrs)],
                            ports=[RAY_PORTS.metrics_export]),
                *front_door,
            ],
            egress=[EgressRule(peers=[Peer(pod_labels=own)])],
        ))
        head_egress = [api_server_egress(api_server_cidrs)]
        gcs = t.ray_service.gcs_fault_tolerance
        if gcs is not None:
            # The GCS store; KubeRay's Redis cleanup Job carries the head's labels, so this admits it too.
            head_egress.append(EgressRule(peers=[Peer(cidr=c) for c in gcs.cidrs], ports=[gcs.port]))
        emit(self, "HeadNetworkPolicy", network_policy(
            f"{t.name}-head", namespace_, pod_labels={**own, RAY_ROLE_LABEL: "head"}, labels=own,
            ingress=[IngressRule(peers=[KUBERAY_OPERATOR], ports=[RAY_PORTS.dashboard, SERVE_PORT])],
            egress=head_egress,
        ))
        # A drain never takes the last replica: one at a time while several run, none while only one does (that
        # drain waits until Serve runs another, or someone accepts the outage). No budget covers the head: a single
        # pod's budget would block every drain of its node (a node group upgrade fails on it); with GCS fault
        # tolerance it comes back with its state while the workers serve, without it the budget could not help.
        single = t.ray_service.workers[0].min_replicas < 2
        emit(self, "WorkerPdb", pod_disruption_budget(
            f"{t.name}-workers", namespace_, labels=own, min_available=1 if single else None,
            pod_labels={**own, RAY_ROLE_LABEL: "worker"}))


class CanaryChart(Chart):
    """A canary's RayService (:func:`plan_canaries`): a manifest resource of its own, so that removing the model's
    ``canary`` from config deletes it (CloudFormation deletes the resource and the handler runs ``kubectl delete``).
    Its pods carry the target's labels, so the target's NetworkPolicies and budget (:class:`TargetChart`) cover it."""

    def __init__(self, scope: Construct, construct_id: str, *, target: ServingTarget) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.target = target
        emit(self, "RayService", target.ray_service.to_dict())


class ServingChart(Chart):
    """The serving and load-test namespaces, their service accounts and their namespace-wide NetworkPolicies; each
    target's objects are a :class:`TargetChart` inside it.

    Both namespaces deny every connection in and out (``default-deny``), then allow out: DNS to CoreDNS for every
    pod; the Pod Identity agent and public HTTPS (S3) for every pod but the Ray heads, which hold no AWS credentials;
    and from the load-test namespace, the serving pods' serve and metrics ports. What a RayService's pods allow
    beyond that, their :class:`TargetChart` says. The load-test namespace enforces the ``restricted`` Pod Security
    Standard: its pods are all ours.

    ``to_json()`` holds only the shared objects (cdk8s leaves nested charts out); :meth:`manifests` has all.

    :param api_server_cidrs: where the API server's network interfaces live (the cluster's subnets), for the Ray
        heads' autoscaler.
    :param front_door_cidrs: the subnets of the front door's load balancer, admitted to every target's serve port;
        default none (no front door).
    :param canaries: the canaries of models with a ``canary`` (:func:`plan_canaries`), each a :class:`CanaryChart`
        inside it; default none.
    """

    def __init__(self, scope: Construct, construct_id: str, *, targets: list[ServingTarget],
                 api_server_cidrs: Sequence[str],
                 namespace_: str = NAMESPACE, metrics_cidrs: Sequence[str] = (),
                 loadtest_namespace: str = LOADTEST_NAMESPACE, front_door_cidrs: Sequence[str] = (),
                 canaries: Sequence[ServingTarget] = ()) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.targets = targets
        emit(self, "Namespace", namespace(namespace_))
        emit(self, "LoadTestNamespace", namespace(loadtest_namespace, labels={SERVING_CLIENT_LABEL: "true"},
                                                  enforce=PodSecurity.RESTRICTED))
        emit(self, "ServeServiceAccount", service_account(SERVE_SERVICE_ACCOUNT, namespace_,
                                                          labels={"app.kubernetes.io/component": "serving"}))
        emit(self, "LoadTestServiceAccount", service_account(LOADTEST_SERVICE_ACCOUNT, loadtest_namespace,
                                                             labels={"app.kubernetes.io/component": "loadtest"}))
        emit(self, "RayHeadServiceAccount", service_account(HEAD_SERVICE_ACCOUNT, namespace_,
                                                            labels={"app.kubernetes.io/component": "serving"}))
        emit(self, "CompileServiceAccount", service_account(COMPILE_SERVICE_ACCOUNT, namespace_,
                                                            labels={"app.kubernetes.io/component": "compile"}))
        not_heads = [{"key": RAY_ROLE_LABEL, "operator": "NotIn", "values": ["head"]}]
        for prefix, ns in (("", namespace_), ("LoadTest", loadtest_namespace)):
            emit(self, f"{prefix}DefaultDeny", default_deny(ns))
            emit(self, f"{prefix}DnsEgress", network_policy("dns", ns, pod_labels={}, egress=[dns_egress()]))
            emit(self, f"{prefix}AwsEgress", network_policy("aws", ns, pod_labels={}, egress=aws_egress(),
                                                            pod_expressions=not_heads if ns == namespace_ else ()))
        emit(self, "LoadTestToModels", network_policy(
            "to-models", loadtest_namespace, pod_labels={}, egress=[EgressRule(
                peers=[Peer(namespace_name=namespace_, pod_labels={"app.kubernetes.io/component": "serving"})],
                ports=[SERVE_PORT, RAY_PORTS.metrics_export])]))
        if front_door_cidrs:
            # Load tests through the front door (loadtest.via: front-door) reach its load balancer in these subnets.
            emit(self, "LoadTestToFrontDoor", network_policy(
                "to-front-door", loadtest_namespace, pod_labels={},
                egress=[EgressRule(peers=[Peer(cidr=c) for c in front_door_cidrs], ports=[80, 443])]))
        self.target_charts = [
            TargetChart(self, "".join(p.capitalize() for p in t.name.split("-")), target=t, namespace_=namespace_,
                        metrics_cidrs=metrics_cidrs, api_server_cidrs=api_server_cidrs,
                        loadtest_namespace=loadtest_namespace, front_door_cidrs=front_door_cidrs)
            for t in targets]
        self.canary_charts = [CanaryChart(self, "".join(p.capitalize() for p in c.name.split("-")), target=c)
                              for c in canaries]

    def manifests(self) -> list[dict[str, Any]]:
        return [*self.to_json(), *(m for c in [*self.target_charts, *self.canary_charts] for m in c.to_json())]

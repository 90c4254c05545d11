"""Typed builders for the KubeRay ``RayService`` fields this project uses (KubeRay v1.7.0, ``ray.io/v1``).

Only the fields we set are modelled; each builder renders plain manifest dicts, which the tests validate
against the RayService CRD's ``openAPIV3Schema``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from eks_inference.errors import ConfigError
from eks_inference.k8s.capacity import cpu_millicores, memory_mebibytes
from eks_inference.k8s.pod import (
    Resources,
    env_list,
    restricted_container_security_context,
    restricted_pod_security_context,
    scratch_volumes,
)

API_VERSION = "ray.io/v1"
SERVE_PORT = 8000
DASHBOARD_PORT = 8265
GCS_PORT = 6379
MIB = 1 << 20

SERVE_DIRECT_INGRESS_PORTS = ((30000, 31000), (40000, 41000))
"""Port ranges Ray Serve 2.60 replicas listen on for HTTP and gRPC when HAProxy ingress is on (the head's
and workers' HAProxy forward to them); Ray's defaults, listed so NetworkPolicies and their tests can name them."""

KUBERAY_DERIVED_RESOURCES = {"aws.amazon.com/neuroncore": "neuron_cores", "google.com/tpu": "TPU",
                             "nvidia.com/gpu": "num-gpus"}
"""Container limits KubeRay turns into ``ray start`` resources itself (ray-operator/controllers/ray/common/pod.go,
addWellKnownAcceleratorResources).

The Ray autoscaler does not see that translation: it reads a group's resources from the RayCluster spec, CPU,
memory and GPUs from the limits but custom resources only from ``rayStartParams.resources`` (or the group's
``resources`` field; Ray 2.60 ``autoscaler/_private/kuberay/autoscaling_config.py``,
``_get_custom_resources``). A group whose ``neuron_cores`` came from the limit alone would offer none in the
autoscaler's eyes, and replicas asking for them would never get a worker. So a worker group declares the
custom accelerator in ``rayStartParams`` too, equal to its limit (checked); KubeRay then keeps that value
instead of adding its own."""
AUTOSCALER_DECLARED = {"aws.amazon.com/neuroncore": "neuron_cores", "google.com/tpu": "TPU"}
"""Limits whose Ray resource the autoscaler cannot derive (see above): declared in ``rayStartParams``."""
HEAD_SERVICE_ACCOUNT = "ray-head"
"""The head pods' service account. KubeRay binds its autoscaler Role (pods get/list/watch/patch, rayclusters
get/patch) to whatever the head template names; naming one keeps it stable across the RayCluster names that each
NewCluster upgrade changes. No EKS Pod Identity association points at it: the head runs no replica that reads
S3, so it holds no AWS credentials."""
INITIALIZING_TIMEOUT_ANNOTATION = "ray.io/initializing-timeout"
"""KubeRay v1.7.0 (ray-operator/controllers/ray/utils/constant.go): a RayService not serving within this time
(Go duration or integer seconds) of its first start is failed for good: ``Ready=False`` with reason
``InitializingTimeout``, a Warning event, and its Ray clusters deleted. Only the first start counts, not upgrades;
recovering means deleting and recreating the RayService."""
NOT_EVICTABLE = {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
"""The Cluster Autoscaler must not drain a node from under a Ray pod to consolidate: a head takes its whole Ray
cluster with it, a worker its replica and whatever it was answering. Ray scales its own pods in (Serve removes a
replica, the Ray autoscaler then its idle pod), and the node, empty, goes after that."""
API_ACCESS_VOLUME = "kube-api-access"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True, kw_only=True)
class RayPorts:
    """Every port a Ray node listens on, pinned in ``rayStartParams``.

    Left alone, Ray picks the node manager, object manager, runtime-env agent and dashboard-agent gRPC ports
    at random on every start; pinned, the pod spec, the NetworkPolicies and the docs can name each one. The
    worker range is Ray's default, written out for the same reason.
    """

    gcs: int = GCS_PORT
    dashboard: int = DASHBOARD_PORT
    client_server: int = 10001
    node_manager: int = 6380
    object_manager: int = 6381
    runtime_env_agent: int = 6382
    dashboard_agent_grpc: int = 6383
    dashboard_agent_listen: int = 52365
    metrics_export: int = 8080
    min_worker: int = 10002
    max_worker: int = 19999

    def start_params(self, *, head: bool) -> dict[str, str]:
        params = {
            "node-manager-port": self.node_manager,
            "object-manager-port": self.object_manager,
            "runtime-env-agent-port": self.runtime_env_agent,
            "dashboard-agent-grpc-port": self.dashboard_agent_grpc,
            "dashboard-agent-listen-port": self.dashboard_agent_listen,
            "metrics-export-port": self.metrics_export,
            "min-worker-port": self.min_worker,
            "max-worker-port": self.max_worker,
        }
        if head:
            params.update({"port": self.gcs, "dashboard-port": self.dashboard,
                           "ray-client-server-port": self.client_server})
        return {k: str(v) for k, v in params.items()}


RAY_PORTS = RayPorts()


def quoted_resources(resources: Mapping[str, float]) -> str:
    """``rayStartParams.resources`` as KubeRay itself writes it: JSON inside single quotes.

    KubeRay puts every param into one ``bash -c`` line as ``--resources=VALUE``; bash strips the double
    quotes of bare JSON and ``ray start`` then rejects ``{neuron_cores:1}``. Single quotes survive as one
    word with the JSON intact (and KubeRay's own parser trims them when it merges accelerators in).
    """
    text = json.dumps(dict(sorted(resources.items())), separators=(",", ":"))
    if "'" in text:
        raise ValueError(f"Ray resource names cannot contain a single quote: {sorted(resources)}")
    return f"'{text}'"


def shm_size_for(object_store_bytes: int) -> str:
    """/dev/shm must hold the whole object store or Ray moves it to /tmp (disk) with only a log warning;
    a quarter GiB on top covers what else lives there (semaphores, torch shared tensors)."""
    return f"{object_store_bytes // MIB + 256}Mi"


class RayAuth:
    """``rayClusterConfig.authOptions.mode`` (KubeRay v1.7.0, ray-operator/apis/ray/v1/raycluster_types.go).

    ``token``: for every Ray cluster it creates, KubeRay generates a Secret named after the cluster holding 32 random
    bytes, base64-encoded, under ``auth_token`` (raycluster_controller.go, ``createAuthSecret``), owned by the cluster
    so that it goes with it. It sets ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` (from that Secret) on the Ray
    container, the autoscaler sidecar and the workers' ``wait-gcs-ready`` init container (common/pod.go,
    ``SetContainerTokenAuthEnvVars``), and sends the token itself, as ``x-ray-authorization: Bearer``, when it calls
    the dashboard (utils/dashboardclient). Ray then refuses every gRPC call (GCS, raylets, agents) and dashboard
    request without it, job submission and ``PUT /api/serve/applications/`` included; health checks stay open, so
    the kubelet's probes pass.
    """

    TOKEN = "token"
    DISABLED = "disabled"


AUTH_MIN_RAY = (2, 52, 0)
"""KubeRay v1.7.0 refuses token authentication for an older ``rayVersion`` (utils/validation.go)."""
METRICS_AUTH_RAY = (2, 61, 0)
"""From this Ray on, token authentication also guards the metrics endpoint (Ray's token-auth documentation). Neither
the managed scraper (it can send only its own Kubernetes token) nor the load-test clients hold the Ray token, so
Serve's and Ray's metrics would stop arriving; :class:`RayServiceSpec` refuses the combination until they can."""


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(".")[:3])
    except ValueError:
        raise ConfigError(f"ray_version: {text!r} is not a Ray release number; write it as MAJOR.MINOR.PATCH, "
                          "equal to the Ray in the image") from None


class UpgradeStrategy:
    """``NewCluster``: a changed ``rayClusterConfig`` (image, resources) starts a second cluster and moves
    traffic once it serves, so a rollout never drops requests. It needs room for both clusters while they
    overlap, which the node groups' ``max_size`` must allow. ``serveConfigV2`` changes apply in place.
    """

    NEW_CLUSTER = "NewCluster"
    NONE = "None"


@dataclass(frozen=True, kw_only=True)
class Toleration:
    key: str
    operator: str = "Exists"
    effect: str = "NoSchedule"

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "operator": self.operator, "effect": self.effect}


@dataclass(frozen=True, kw_only=True)
class RayPod:
    """What a head or worker pod runs and where.

    :param image: container image (one per processor family).
    :param resources: container requests/limits.
    :param node_selector: node labels the pod must land on.
    :param tolerations: taints it tolerates (Neuron, GPU).
    :param service_account: bound to the EKS Pod Identity role of serving pods.
    :param env: extra environment (region, offline flags).
    :param labels: pod labels (NetworkPolicy and PDB select on them).
    :param object_store_bytes: Ray's object store, passed as ``object-store-memory``; /dev/shm is sized to
        hold it (:func:`shm_size_for`). Set explicitly because Ray's default, 30 % of the container's memory,
        outgrows any /dev/shm that is not itself most of the pod's memory.
    :param scheduler_name: default the cluster's scheduler; the Neuron scheduler for multi-core pods.
    :param anti_affinity_label: spread pods carrying this label one per node (whole-node serving).
    :param extra_volumes: pod volumes beyond the scratch ones (e.g. the head's API token for its autoscaler).
    :param annotations: pod annotations; default :data:`NOT_EVICTABLE`.
    """

    image: str
    resources: Resources
    node_selector: Mapping[str, str]
    service_account: str
    tolerations: Sequence[Toleration] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    object_store_bytes: int = 512 * MIB
    scheduler_name: str | None = None
    anti_affinity_label: tuple[str, str] | None = None
    extra_volumes: Sequence[Mapping[str, Any]] = ()
    annotations: Mapping[str, str] = field(default_factory=lambda: dict(NOT_EVICTABLE))

    def template(self, *, ports: Sequence[tuple[str, int]], readiness: Mapping[str, Any]) -> dict[str, Any]:
        volumes, mounts = scratch_volumes(shm_size=shm_size_for(self.object_store_bytes))
        container = {
            "name": "ray",
            "image": self.image,
            "imagePullPolicy": "IfNotPresent",
            "resources": self.resources.to_dict(),
            "env": env_list({"HOME": "/tmp", **self.env}),
            "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports],
            "securityContext": restricted_container_security_context(),
            "volumeMounts": mounts,
            "readinessProbe": dict(readiness),
            "lifecycle": {"preStop": {"exec": {"command": ["ray", "stop"]}}},
        }
        spec: dict[str, Any] = {
            "serviceAccountName": self.service_account,
            # The Ray container never calls the Kubernetes API; only the head's autoscaler does, and it mounts
            # a token of its own (HeadGroup).
            "automountServiceAccountToken": False,
            "nodeSelector": dict(self.node_selector),
            "securityContext": restricted_pod_security_context(),
            "containers": [container],
            "volumes": [*volumes, *(dict(v) for v in self.extra_volumes)],
            "terminationGracePeriodSeconds": 60,
        }
        if self.tolerations:
            spec["tolerations"] = [t.to_dict() for t in self.tolerations]
        if self.scheduler_name:
            spec["schedulerName"] = self.scheduler_name
        if self.anti_affinity_label:
            key, value = self.anti_affinity_label
            spec["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {key: value}},
                "topologyKey": "kubernetes.io/hostname",
            }]}}
        metadata: dict[str, Any] = {"labels": dict(self.labels)}
        if self.annotations:
            metadata["annotations"] = dict(self.annotations)
        return {"metadata": metadata, "spec": spec}


def api_access_volume(expiration_s: int = 3607) -> dict[str, Any]:
    """What ``automountServiceAccountToken`` would mount, as a volume that only chosen containers mount: a
    bound, expiring token, the cluster CA and the namespace (the kubelet refreshes the token; Ray's KubeRay node
    provider re-reads it, ray ``autoscaler/_private/kuberay/node_provider.py``)."""
    return {"name": API_ACCESS_VOLUME, "projected": {"defaultMode": 0o444, "sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": expiration_s}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}}


class UpscalingMode:
    """``autoscalerOptions.upscalingMode``: ``Default`` (and its alias ``Aggressive``) starts every pod the demand
    needs at once; ``Conservative`` caps pending pods at the cluster's size (Ray's ``upscaling_speed`` 1)."""

    DEFAULT = "Default"
    CONSERVATIVE = "Conservative"


@dataclass(frozen=True, kw_only=True)
class AutoscalerOptions:
    """KubeRay's in-tree Ray autoscaler, a sidecar of the head (``autoscalerOptions``, KubeRay v1.7.0).

    :param resources: the sidecar's container resources; default 200m CPU (500m limit) and 512 MiB, counted
        with the head on the system nodes.
    :param idle_timeout_s: how long a worker pod without replicas lives on, default 120: Serve has already waited
        ``downscale_delay_s`` before removing its replica, and a pod kept warm a little longer comes back in
        seconds (weights and compiled artifact in its /tmp) where a new one takes minutes, a new node more.
    :param upscaling_mode: default :attr:`UpscalingMode.DEFAULT`: Serve's ``upscale_delay_s`` already damped the
        decision, and every pod it asks for is a replica wanted now; rate limiting again only slows scale-out.
    :param version: ``v2``, the default from Ray 2.47 on, written out so that the sidecar matches the image.
    :param env: extra environment of the sidecar.
    """

    resources: Resources = field(default_factory=lambda: Resources(cpu="200m", cpu_limit="500m", memory="512Mi"))
    idle_timeout_s: int = 120
    upscaling_mode: str = UpscalingMode.DEFAULT
    version: str = "v2"
    env: Mapping[str, str] = field(default_factory=lambda: {"HOME": "/tmp"})

    def to_dict(self) -> dict[str, Any]:
        # The sidecar gets the pod's scratch /tmp (Ray writes its logs there; the root filesystem is read-only)
        # and the only API token in the pod.
        return {
            "resources": self.resources.to_dict(),
            "idleTimeoutSeconds": self.idle_timeout_s,
            "upscalingMode": self.upscaling_mode,
            "version": self.version,
            "env": env_list(self.env),
            "securityContext": restricted_container_security_context(),
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                             {"name": API_ACCESS_VOLUME, "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True}],
        }


@dataclass(frozen=True, kw_only=True)
class HeadGroup:
    """The Ray head: GCS, Serve controller and dashboard, no replicas (``num-cpus: "0"``).

    With autoscaling on, KubeRay adds the Ray autoscaler as a second container of this pod. The pod's own
    ``automountServiceAccountToken`` stays off; the autoscaler alone mounts :func:`api_access_volume`.

    :param ports: default :data:`RAY_PORTS`.
    :param autoscaler: the sidecar KubeRay adds; default :class:`AutoscalerOptions`. None: no autoscaling.
    """

    pod: RayPod
    ports: RayPorts = RAY_PORTS
    autoscaler: AutoscalerOptions | None = field(default_factory=AutoscalerOptions)

    def __post_init__(self) -> None:
        if self.autoscaler is not None and not any(v.get("name") == API_ACCESS_VOLUME
                                                   for v in self.pod.extra_volumes):
            raise ValueError(f"head pod: the autoscaler needs the {API_ACCESS_VOLUME!r} volume; add "
                             "api_access_volume() to the pod's extra_volumes")

    @property
    def requests(self) -> Resources:
        """What the whole head pod asks of its node: the Ray container plus the autoscaler sidecar."""
        r = self.pod.resources
        if self.autoscaler is None:
            return r
        a = self.autoscaler.resources
        return Resources(cpu=f"{cpu_millicores(r.cpu) + cpu_millicores(a.cpu)}m",
                         memory=f"{memory_mebibytes(r.memory) + memory_mebibytes(a.memory)}Mi")

    def start_params(self) -> dict[str, str]:
        return {"num-cpus": "0", "dashboard-host": "0.0.0.0",
                "object-store-memory": str(self.pod.object_store_bytes), **self.ports.start_params(head=True)}

    def to_dict(self) -> dict[str, Any]:
        readiness = {"httpGet": {"path": "/api/gcs_healthz", "port": self.ports.dashboard},
                     "initialDelaySeconds": 10, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 12}
        p = self.ports
        return {
            "rayStartParams": self.start_params(),
            "template": self.pod.template(
                ports=[("gcs-server", p.gcs), ("dashboard", p.dashboard), ("client", p.client_server),
                       ("serve", SERVE_PORT), ("metrics", p.metrics_export),
                       ("dashboard-agent", p.dashboard_agent_listen)],
                readiness=readiness,
            ),
        }


@dataclass(frozen=True, kw_only=True)
class WorkerGroup:
    """Ray workers on one processor's nodes; each pod hosts ``ray_cpus`` CPUs of Serve replicas.

    GPUs are not repeated here: KubeRay derives ``num-gpus`` from the ``nvidia.com/gpu`` limit, and so does the Ray
    autoscaler. A custom accelerator (``neuron_cores`` from ``aws.amazon.com/neuroncore``) is declared in
    ``rayStartParams`` as well, equal to its limit, because the autoscaler reads custom resources only from there
    (:data:`KUBERAY_DERIVED_RESOURCES`); the constructor adds it and refuses a value that disagrees with the limit.

    :param name: group name (kebab-case), the processor.
    :param replicas: pods to start; ``min_replicas``/``max_replicas`` bound the Ray autoscaler.
    :param ray_cpus: ``num-cpus`` Ray advertises for the pod (replicas ask ``num_cpus`` of it).
    :param ray_resources: custom Ray resources; default none beyond the declared accelerator. Rendered
        single-quoted (:func:`quoted_resources`).
    :param ports: default :data:`RAY_PORTS`.
    """

    name: str
    pod: RayPod
    replicas: int
    min_replicas: int
    max_replicas: int
    ray_cpus: int
    ray_resources: Mapping[str, float] = field(default_factory=dict)
    ports: RayPorts = RAY_PORTS

    def __post_init__(self) -> None:
        if "num-gpus" in self.ray_resources:
            raise ValueError(f"worker group {self.name!r}: num-gpus comes from the nvidia.com/gpu limit; set the "
                             "limit instead")
        declared = dict(self.ray_resources)
        for limit, ray_name in AUTOSCALER_DECLARED.items():
            count = self.pod.resources.extended.get(limit)
            if count is None:
                if ray_name in declared:
                    raise ValueError(f"worker group {self.name!r}: {ray_name} without a {limit} limit; the pod "
                                     "would advertise devices the scheduler never gave it")
                continue
            if declared.setdefault(ray_name, count) != count:
                raise ValueError(f"worker group {self.name!r}: {ray_name}={declared[ray_name]} differs from the "
                                 f"{limit} limit {count}; they must agree")
        object.__setattr__(self, "ray_resources", declared)

    def start_params(self) -> dict[str, str]:
        params = {"num-cpus": str(self.ray_cpus), "object-store-memory": str(self.pod.object_store_bytes),
                  **self.ports.start_params(head=False)}
        if self.ray_resources:
            params["resources"] = quoted_resources(self.ray_resources)
        return params

    def to_dict(self) -> dict[str, Any]:
        readiness = {"httpGet": {"path": "/-/healthz", "port": SERVE_PORT},
                     "initialDelaySeconds": 10, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 60}
        p = self.ports
        return {
            "groupName": self.name,
            "replicas": self.replicas,
            "minReplicas": self.min_replicas,
            "maxReplicas": self.max_replicas,
            "rayStartParams": self.start_params(),
            "template": self.pod.template(
                ports=[("serve", SERVE_PORT), ("metrics", p.metrics_export),
                       ("dashboard-agent", p.dashboard_agent_listen)],
                readiness=readiness),
        }


GCS_STORE_PORT = 6390
"""The port of the GCS fault-tolerance store (ElastiCache). Not Redis' default 6379: that is the head's own GCS port
in every pod, and a store on another port keeps the two apart in NetworkPolicies and security groups."""
GCS_STORE_SECRET = "ray-gcs-store"
GCS_STORE_SECRET_KEY = "auth-token"
"""The Kubernetes Secret (in the serving namespace) and key holding the store's auth token, which
``gcsFaultToleranceOptions.redisPassword`` references."""
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
"""The images' CA bundle (Debian's and Ubuntu's ``ca-certificates``). Ray's GCS verifies the store's certificate with
the file ``RAY_REDIS_CA_CERT`` names (ray src/ray/gcs/store_client/redis_context.cc, ``RedisContext``: the CA file
and path come from ``RayConfig`` ``REDIS_CA_CERT`` / ``REDIS_CA_PATH``, read from ``RAY_REDIS_CA_CERT`` /
``RAY_REDIS_CA_PATH``); left empty, hiredis falls back to the default paths of the OpenSSL built into Ray, which
need not be the image's. ElastiCache's certificates chain to Amazon's public roots, which the bundle holds."""


@dataclass(frozen=True, kw_only=True)
class GcsFaultTolerance:
    """``rayClusterConfig.gcsFaultToleranceOptions`` with an external Redis-compatible store (KubeRay v1.7.0,
    ray-operator/controllers/ray/common/pod.go, ``configureGCSFaultTolerance`` and ``configureRedisFT``).

    KubeRay then sets, on the head's Ray container, ``RAY_REDIS_ADDRESS`` (``redisAddress``), ``REDIS_PASSWORD`` (from
    ``redisPassword``, here a ``secretKeyRef``), ``--redis-password=$REDIS_PASSWORD`` on its ``ray start`` line and
    ``RAY_external_storage_namespace`` (the RayCluster's UID: each cluster of a NewCluster upgrade keeps its own keys);
    on the workers ``RAY_gcs_rpc_server_reconnect_timeout_s=600``, so that they wait for a restarted head instead of
    exiting after Ray's default 60 s. Deleting a Ray cluster runs a Job built from the head's pod (same labels, image,
    environment) that removes its keys from the store, behind the finalizer ``ray.io/gcs-ft-redis-cleanup-finalizer``
    (raycluster_controller.go, ``buildRedisCleanupJob``).

    :param host: the store's primary endpoint (a deploy-time token in the stacks).
    :param cidrs: where the store's network interfaces live (its subnets), for the heads' egress NetworkPolicy.
    :param port: default :data:`GCS_STORE_PORT`.
    :param secret: the Kubernetes Secret with the auth token, default :data:`GCS_STORE_SECRET`.
    :param secret_key: its key, default :data:`GCS_STORE_SECRET_KEY`.
    :param ca_bundle: the CA file the GCS verifies the store with, default :data:`SYSTEM_CA_BUNDLE`.
    """

    host: str
    cidrs: Sequence[str]
    port: int = GCS_STORE_PORT
    secret: str = GCS_STORE_SECRET
    secret_key: str = GCS_STORE_SECRET_KEY
    ca_bundle: str = SYSTEM_CA_BUNDLE

    def __post_init__(self) -> None:
        if not self.cidrs:
            raise ConfigError("GCS store: no subnets given; the heads' NetworkPolicy needs the store's subnets to let "
                              "them reach it")

    @property
    def redis_address(self) -> str:
        """``rediss://``: Ray turns TLS on for the store from the scheme (ray python/ray/_private/services.py,
        ``get_address``, passed to the GCS as ``--redis_enable_ssl``)."""
        return f"rediss://{self.host}:{self.port}"

    def head_env(self) -> dict[str, str]:
        return {"RAY_REDIS_CA_CERT": self.ca_bundle}

    def to_dict(self) -> dict[str, Any]:
        return {"redisAddress": self.redis_address,
                "redisPassword": {"valueFrom": {"secretKeyRef": {"name": self.secret, "key": self.secret_key}}}}


@dataclass(frozen=True, kw_only=True)
class RayServiceSpec:
    """One RayService: a Ray cluster serving one model on one processor.

    :param serve_config: the ``serveConfigV2`` document (rendered by ``render_serve_config``).
    :param ray_version: must equal the Ray in the image.
    :param upgrade_strategy: default :attr:`UpgradeStrategy.NEW_CLUSTER` (see its docstring).
    :param initializing_timeout_s: :data:`INITIALIZING_TIMEOUT_ANNOTATION`; default none (wait forever).
    :param auth: :class:`RayAuth` mode; default :attr:`RayAuth.TOKEN`.
    :param gcs_fault_tolerance: keep the GCS state in an external store (:class:`GcsFaultTolerance`); default none:
        a lost head restarts the whole Ray cluster.
    """

    name: str
    namespace: str
    labels: Mapping[str, str]
    ray_version: str
    serve_config: Mapping[str, Any]
    head: HeadGroup
    workers: Sequence[WorkerGroup]
    upgrade_strategy: str = UpgradeStrategy.NEW_CLUSTER
    initializing_timeout_s: int | None = None
    auth: str = RayAuth.TOKEN
    gcs_fault_tolerance: GcsFaultTolerance | None = None

    def __post_init__(self) -> None:
        if self.auth not in (RayAuth.TOKEN, RayAuth.DISABLED):
            raise ConfigError(f"RayService {self.name!r}: auth {self.auth!r} is not a KubeRay authOptions mode; use "
                              f"{RayAuth.TOKEN!r} or {RayAuth.DISABLED!r}")
        if self.auth != RayAuth.TOKEN:
            return
        ray = _version(self.ray_version)
        if ray < AUTH_MIN_RAY:
            raise ConfigError(f"ray_version: {self.ray_version!r} has no token authentication (KubeRay needs Ray "
                              f">= {'.'.join(map(str, AUTH_MIN_RAY))}); raise Ray in the images and ray_version")
        if ray >= METRICS_AUTH_RAY:
            raise ConfigError(
                f"ray_version: {self.ray_version!r} puts the metrics endpoint behind token authentication, which the "
                "managed scraper and the load-test clients cannot pass: Serve's and Ray's metrics would stop. Give "
                "them a way in first (docs/security.md, \"Ray's control plane\"), then lift this check "
                f"(METRICS_AUTH_RAY); or stay on Ray {METRICS_AUTH_RAY[0]}.{METRICS_AUTH_RAY[1] - 1}")

    def to_dict(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace, "labels": dict(self.labels)}
        if self.initializing_timeout_s is not None:
            metadata["annotations"] = {INITIALIZING_TIMEOUT_ANNOTATION: f"{self.initializing_timeout_s}s"}
        cluster: dict[str, Any] = {
            "rayVersion": self.ray_version,
            "authOptions": {"mode": self.auth},
            "enableInTreeAutoscaling": self.head.autoscaler is not None,
        }
        if self.head.autoscaler is not None:
            cluster["autoscalerOptions"] = self.head.autoscaler.to_dict()
        if self.gcs_fault_tolerance is not None:
            cluster["gcsFaultToleranceOptions"] = self.gcs_fault_tolerance.to_dict()
        cluster["headGroupSpec"] = self.head.to_dict()
        cluster["workerGroupSpecs"] = [w.to_dict() for w in self.workers]
        return {
            "apiVersion": API_VERSION,
            "kind": "RayService",
            "metadata": metadata,
            "spec": {
                "upgradeStrategy": {"type": self.upgrade_strategy},
                "serveConfigV2": serve_config_yaml(self.serve_config),
                "rayClusterConfig": cluster,
            },
        }


def serve_config_yaml(config: Mapping[str, Any]) -> str:
    """``serveConfigV2`` is a YAML string inside the manifest; key order is kept so diffs stay readable."""
    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)

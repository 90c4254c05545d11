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
addWellKnownAcceleratorResources): the limit is the one source of truth, so rayStartParams never repeat them."""


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
            "automountServiceAccountToken": False,  # Ray never calls the Kubernetes API here
            "nodeSelector": dict(self.node_selector),
            "securityContext": restricted_pod_security_context(),
            "containers": [container],
            "volumes": volumes,
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
        return {"metadata": {"labels": dict(self.labels)}, "spec": spec}


@dataclass(frozen=True, kw_only=True)
class HeadGroup:
    """The Ray head: GCS, Serve controller and dashboard, no replicas (``num-cpus: "0"``).

    :param ports: default :data:`RAY_PORTS`.
    """

    pod: RayPod
    ports: RayPorts = RAY_PORTS

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

    Accelerators are not repeated here: KubeRay derives ``neuron_cores`` from the container's
    ``aws.amazon.com/neuroncore`` limit and ``num-gpus`` from ``nvidia.com/gpu``
    (:data:`KUBERAY_DERIVED_RESOURCES`), so the limit the scheduler honours is the count Ray advertises.

    :param name: group name (kebab-case), the processor.
    :param replicas: pods to start; ``min_replicas``/``max_replicas`` bound autoscaling.
    :param ray_cpus: ``num-cpus`` Ray advertises for the pod (replicas ask ``num_cpus`` of it).
    :param ray_resources: other custom Ray resources; default none. Rendered single-quoted
        (:func:`quoted_resources`).
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
        derived = sorted(set(self.ray_resources) & set(KUBERAY_DERIVED_RESOURCES.values()))
        if derived:
            raise ValueError(f"worker group {self.name!r}: {derived} come from the container limits "
                             f"({sorted(KUBERAY_DERIVED_RESOURCES)}); set the limit instead")

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


@dataclass(frozen=True, kw_only=True)
class RayServiceSpec:
    """One RayService: a Ray cluster serving one model on one processor.

    :param serve_config: the ``serveConfigV2`` document (rendered by ``render_serve_config``).
    :param ray_version: must equal the Ray in the image.
    :param upgrade_strategy: default :attr:`UpgradeStrategy.NEW_CLUSTER` (see its docstring).
    """

    name: str
    namespace: str
    labels: Mapping[str, str]
    ray_version: str
    serve_config: Mapping[str, Any]
    head: HeadGroup
    workers: Sequence[WorkerGroup]
    upgrade_strategy: str = UpgradeStrategy.NEW_CLUSTER

    def to_dict(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": "RayService",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": dict(self.labels)},
            "spec": {
                "upgradeStrategy": {"type": self.upgrade_strategy},
                "serveConfigV2": serve_config_yaml(self.serve_config),
                "rayClusterConfig": {
                    "rayVersion": self.ray_version,
                    "enableInTreeAutoscaling": False,
                    "headGroupSpec": self.head.to_dict(),
                    "workerGroupSpecs": [w.to_dict() for w in self.workers],
                },
            },
        }


def serve_config_yaml(config: Mapping[str, Any]) -> str:
    """``serveConfigV2`` is a YAML string inside the manifest; key order is kept so diffs stay readable."""
    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)

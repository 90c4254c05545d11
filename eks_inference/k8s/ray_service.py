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
    :param shm_size: memory-backed /dev/shm for Ray's object store; default none.
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
    shm_size: str | None = None
    scheduler_name: str | None = None
    anti_affinity_label: tuple[str, str] | None = None

    def template(self, *, ports: Sequence[tuple[str, int]], readiness: Mapping[str, Any]) -> dict[str, Any]:
        volumes, mounts = scratch_volumes(shm_size=self.shm_size)
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
    """The Ray head: GCS, Serve controller and dashboard, no replicas (``num-cpus: "0"``)."""

    pod: RayPod

    def to_dict(self) -> dict[str, Any]:
        readiness = {"httpGet": {"path": "/api/gcs_healthz", "port": DASHBOARD_PORT},
                     "initialDelaySeconds": 10, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 12}
        return {
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
            "template": self.pod.template(
                ports=[("gcs", GCS_PORT), ("dashboard", DASHBOARD_PORT), ("serve", SERVE_PORT)],
                readiness=readiness,
            ),
        }


@dataclass(frozen=True, kw_only=True)
class WorkerGroup:
    """Ray workers on one processor's nodes; each pod hosts ``ray_cpus`` CPUs of Serve replicas.

    :param name: group name (kebab-case), the processor.
    :param replicas: pods to start; ``min_replicas``/``max_replicas`` bound autoscaling.
    :param ray_cpus: ``num-cpus`` Ray advertises for the pod (replicas ask ``num_cpus`` of it).
    :param ray_resources: custom Ray resources, e.g. ``{"neuron_cores": 2}``.
    :param ray_gpus: ``num-gpus`` for GPU pods; default none.
    """

    name: str
    pod: RayPod
    replicas: int
    min_replicas: int
    max_replicas: int
    ray_cpus: int
    ray_resources: Mapping[str, int] = field(default_factory=dict)
    ray_gpus: int | None = None

    def to_dict(self) -> dict[str, Any]:
        params: dict[str, str] = {"num-cpus": str(self.ray_cpus)}
        if self.ray_resources:
            # rayStartParams values are strings; KubeRay passes this one to `ray start --resources`.
            params["resources"] = json.dumps(dict(self.ray_resources), separators=(",", ":"))
        if self.ray_gpus is not None:
            params["num-gpus"] = str(self.ray_gpus)
        readiness = {"httpGet": {"path": "/-/healthz", "port": SERVE_PORT},
                     "initialDelaySeconds": 10, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 60}
        return {
            "groupName": self.name,
            "replicas": self.replicas,
            "minReplicas": self.min_replicas,
            "maxReplicas": self.max_replicas,
            "rayStartParams": params,
            "template": self.pod.template(ports=[("serve", SERVE_PORT)], readiness=readiness),
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

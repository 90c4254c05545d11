"""The exporters on accelerator nodes and what may reach them: plain manifest dicts, applied by
:class:`~eks_inference.constructs.observability.ClusterObservability`.

* ``neuron-monitor``: its own DaemonSet, because the pinned Neuron chart ships no monitor. On Inferentia nodes
  only (node selector), tolerating their taint, the image pinned in ``AddonVersions``. It runs the image's
  entrypoint, which starts ``neuron-monitor`` and serves its output as Prometheus text on ``--port``; it is
  privileged because ``neuron-monitor`` reads the Neuron driver's devices and sysfs (aws-neuron-sdk
  ``src/k8/k8s-neuron-monitor-daemonset.yml`` runs it the same way). Requests are small so that it never
  displaces a serving pod from an ``inf2.xlarge``.
* The monitoring namespace holds these node exporters and nothing else, and enforces the ``privileged`` Pod Security
  Standard: neuron-monitor is privileged, and dcgm-exporter (NVIDIA's chart) adds ``SYS_ADMIN`` and mounts the
  kubelet's pod-resources directory from the host, each of which ``baseline`` rejects; under ``baseline`` the
  API server would refuse every exporter pod and Neuron and GPU metrics, dashboards and alerts would stay empty.
  Warnings and audit stay at ``baseline``, so anything else placed here is reported.
* Its NetworkPolicies: nothing in or out (``default-deny``; the exporters read only their node), except the scraper's
  subnets on the metrics ports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eks_inference.k8s.objects import PART_OF, PodSecurity, default_deny, namespace
from eks_inference.observability.scrape import (
    DCGM_EXPORTER_PORT,
    METRICS_PORT_NAME,
    MONITORING_NAMESPACE,
    NEURON_MONITOR_PORT,
    PROCESSOR_LABEL,
)

NEURON_TAINT_KEY = "aws.amazon.com/neuron"
NEURON_MONITOR = "neuron-monitor"


def neuron_monitor_daemonset(image: str, *, namespace_: str = MONITORING_NAMESPACE) -> dict[str, Any]:
    labels = {**PART_OF, "app.kubernetes.io/name": NEURON_MONITOR, "app.kubernetes.io/component": "exporter"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": NEURON_MONITOR, "namespace": namespace_, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": NEURON_MONITOR}},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": {**labels, PROCESSOR_LABEL: "inferentia"}},
                "spec": {
                    "nodeSelector": {PROCESSOR_LABEL: "inferentia"},
                    "tolerations": [{"key": NEURON_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
                    "priorityClassName": "system-node-critical",
                    "automountServiceAccountToken": False,
                    "containers": [{
                        "name": NEURON_MONITOR,
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/opt/bin/entrypoint.sh"],
                        "args": ["--port", str(NEURON_MONITOR_PORT)],
                        "ports": [{"name": METRICS_PORT_NAME, "containerPort": NEURON_MONITOR_PORT, "protocol": "TCP"}],
                        "env": [{"name": "GOMEMLIMIT", "value": "160MiB"}],
                        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                                      "limits": {"cpu": "500m", "memory": "256Mi"}},
                        "securityContext": {"privileged": True},
                        "readinessProbe": {"tcpSocket": {"port": NEURON_MONITOR_PORT}, "periodSeconds": 10},
                    }],
                },
            },
        },
    }


def monitoring_network_policy(scraper_cidrs: Sequence[str], *, namespace_: str = MONITORING_NAMESPACE,
                              ) -> dict[str, Any]:
    """Every pod of the monitoring namespace: ingress only from the scraper's subnets, on the metrics ports."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "metrics-from-scraper", "namespace": namespace_, "labels": dict(PART_OF)},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"ipBlock": {"cidr": c}} for c in scraper_cidrs],
                "ports": [{"protocol": "TCP", "port": p} for p in (NEURON_MONITOR_PORT, DCGM_EXPORTER_PORT)],
            }],
        },
    }


def monitoring_manifests(*, neuron_image: str | None, scraper_cidrs: Sequence[str]) -> list[dict[str, Any]]:
    """The namespace, its NetworkPolicies and (with an Inferentia group) the neuron-monitor DaemonSet."""
    objs = [namespace(MONITORING_NAMESPACE, enforce=PodSecurity.PRIVILEGED, warn=PodSecurity.BASELINE),
            default_deny(MONITORING_NAMESPACE), monitoring_network_policy(scraper_cidrs)]
    if neuron_image:
        objs.append(neuron_monitor_daemonset(neuron_image))
    return objs


def dcgm_exporter_values() -> dict[str, Any]:
    """Helm values of NVIDIA's dcgm-exporter chart: GPU nodes only, their taint tolerated, no ServiceMonitor (there
    is no Prometheus operator; the managed scraper finds the pods itself)."""
    return {
        "nodeSelector": {PROCESSOR_LABEL: "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "podLabels": {**PART_OF, PROCESSOR_LABEL: "gpu"},
        "serviceMonitor": {"enabled": False},
        "service": {"port": DCGM_EXPORTER_PORT, "address": f":{DCGM_EXPORTER_PORT}"},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
    }

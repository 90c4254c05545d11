"""What the KubeRay operator's namespace lets in and out: plain manifest dicts, applied after the operator's chart.

The operator (KubeRay v1.7.0, ray-operator/controllers/ray) talks to the API server, reads each Ray cluster's Serve
status and pushes its Serve config through the head's dashboard (``utils/dashboardclient``, through the head Service),
and checks the head's Serve proxy on the serve port (``rayservice_controller.go``, ``updateHeadPodServeLabel``, by pod
address). It calls nothing on the workers and nothing on the dashboard agent. Nothing connects to it: it runs no
webhook, and the kubelet's probes come from its own node, which the VPC CNI always admits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eks_inference.k8s.objects import (
    EgressRule,
    Peer,
    api_server_egress,
    default_deny,
    dns_egress,
    network_policy,
)
from eks_inference.k8s.ray_service import DASHBOARD_PORT, SERVE_PORT

KUBERAY_NAMESPACE = "kuberay-system"
OPERATOR_LABELS = {"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/component": "kuberay-operator"}
"""The operator's pod labels (kuberay helm-chart/kuberay-operator templates/deployment.yaml at v1.7.0)."""
OPERATOR = Peer(namespace_name=KUBERAY_NAMESPACE, pod_labels=OPERATOR_LABELS)
RAY_HEADS = Peer(any_namespace=True, pod_labels={"ray.io/node-type": "head"})
"""Every Ray head KubeRay manages, labelled by KubeRay itself (common/pod.go, ``labelPod``)."""


def operator_network_policies(*, api_server_cidrs: Sequence[str],
                              namespace_: str = KUBERAY_NAMESPACE) -> list[dict[str, Any]]:
    """``default-deny`` for the namespace, then out of the operator's pods: DNS, the API server, and the Ray heads'
    dashboard and serve ports."""
    return [
        default_deny(namespace_),
        network_policy("kuberay-operator", namespace_, pod_labels=OPERATOR_LABELS, egress=[
            dns_egress(),
            api_server_egress(api_server_cidrs),
            EgressRule(peers=[RAY_HEADS], ports=[DASHBOARD_PORT, SERVE_PORT]),
        ]),
    ]

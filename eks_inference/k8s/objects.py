"""Typed builders for the plain Kubernetes kinds the charts emit, and the glue into a cdk8s chart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cdk8s import ApiObject, Chart, JsonPatch

PART_OF = {"app.kubernetes.io/part-of": "eks-inference", "app.kubernetes.io/managed-by": "cdk8s"}


def emit(chart: Chart, construct_id: str, manifest: Mapping[str, Any]) -> ApiObject:
    """Add a rendered manifest to ``chart`` (cdk8s keeps it in order and synthesizes it)."""
    meta = dict(manifest["metadata"])
    obj = ApiObject(chart, construct_id, api_version=manifest["apiVersion"], kind=manifest["kind"], metadata=meta)
    for key, value in manifest.items():
        if key not in ("apiVersion", "kind", "metadata"):
            obj.add_json_patch(JsonPatch.add(f"/{key}", value))
    return obj


def namespace(name: str, *, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Pod Security Admission: enforce ``baseline``, warn and audit at ``restricted``.

    Our own containers meet ``restricted``; KubeRay injects helper containers we do not control, so
    enforcing ``restricted`` could keep Ray pods from starting after an operator upgrade.
    """
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {
            **PART_OF, **(labels or {}),
            "pod-security.kubernetes.io/enforce": "baseline",
            "pod-security.kubernetes.io/warn": "restricted",
            "pod-security.kubernetes.io/audit": "restricted",
        }},
    }


def service_account(name: str, namespace_: str, *, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace_, "labels": {**PART_OF, **(labels or {})}},
        "automountServiceAccountToken": False,
    }


@dataclass(frozen=True, kw_only=True)
class Peer:
    """Who may connect: pods matching ``pod_labels`` (in ``namespace_name`` or the policy's own namespace), or
    addresses in ``cidr`` (outside any pod: the managed metrics scraper's subnets)."""

    pod_labels: Mapping[str, str] = field(default_factory=dict)
    namespace_name: str | None = None
    cidr: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.cidr is not None:
            return {"ipBlock": {"cidr": self.cidr}}
        peer: dict[str, Any] = {"podSelector": {"matchLabels": dict(self.pod_labels)}}
        if self.namespace_name:
            peer["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": self.namespace_name}}
        return peer


@dataclass(frozen=True, kw_only=True)
class IngressRule:
    """Traffic from ``peers`` to ``ports`` (all ports when empty)."""

    peers: Sequence[Peer]
    ports: Sequence[int] = ()

    def to_dict(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"from": [p.to_dict() for p in self.peers]}
        if self.ports:
            rule["ports"] = [{"protocol": "TCP", "port": p} for p in self.ports]
        return rule


def network_policy(name: str, namespace_: str, *, pod_labels: Mapping[str, str],
                   ingress: Sequence[IngressRule], labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Ingress allow-list for the selected pods; anything not listed is denied. Egress stays open (S3, DNS)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace_, "labels": {**PART_OF, **(labels or {})}},
        "spec": {
            "podSelector": {"matchLabels": dict(pod_labels)},
            "policyTypes": ["Ingress"],
            "ingress": [r.to_dict() for r in ingress],
        },
    }


def pod_disruption_budget(name: str, namespace_: str, *, pod_labels: Mapping[str, str], max_unavailable: int = 1,
                          labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace_, "labels": {**PART_OF, **(labels or {})}},
        "spec": {"maxUnavailable": max_unavailable, "selector": {"matchLabels": dict(pod_labels)}},
    }

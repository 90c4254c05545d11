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


class PodSecurity:
    """Pod Security Standards levels, as the ``pod-security.kubernetes.io/*`` namespace labels name them."""

    PRIVILEGED = "privileged"
    BASELINE = "baseline"
    RESTRICTED = "restricted"


def namespace(name: str, *, labels: Mapping[str, str] | None = None, enforce: str = PodSecurity.BASELINE,
              warn: str = PodSecurity.RESTRICTED) -> dict[str, Any]:
    """A namespace with Pod Security Admission labels: ``enforce`` rejects pods (default ``baseline``), ``warn`` and
    ``audit`` report them (default ``restricted``).

    The serving namespace keeps ``baseline``: our own containers meet ``restricted``, and so do the helpers KubeRay
    v1.7.0 injects (checked in tests/system), but a later operator could inject one that does not and keep Ray pods
    from starting; warnings at ``restricted`` say so first.
    """
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {
            **PART_OF, **(labels or {}),
            "pod-security.kubernetes.io/enforce": enforce,
            "pod-security.kubernetes.io/warn": warn,
            "pod-security.kubernetes.io/audit": warn,
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
    """Who may connect, or be connected to: pods matching ``pod_labels`` in the policy's own namespace, in the
    namespace ``namespace_name``, in every namespace carrying ``namespace_labels``, or in any namespace
    (``any_namespace``); or addresses in ``cidr`` less ``except_cidrs`` (outside any pod: the managed metrics
    scraper's subnets, the Pod Identity agent, S3).

    Namespace labels are set only by those who may patch namespaces (cluster administrators); pod labels by anyone
    who may create a pod in the namespace. Peers that cross a trust boundary are therefore chosen by namespace.
    """

    pod_labels: Mapping[str, str] = field(default_factory=dict)
    namespace_name: str | None = None
    namespace_labels: Mapping[str, str] | None = None
    any_namespace: bool = False
    cidr: str | None = None
    except_cidrs: Sequence[str] = ()

    def to_dict(self) -> dict[str, Any]:
        if self.cidr is not None:
            block: dict[str, Any] = {"cidr": self.cidr}
            if self.except_cidrs:
                block["except"] = list(self.except_cidrs)
            return {"ipBlock": block}
        peer: dict[str, Any] = {"podSelector": {"matchLabels": dict(self.pod_labels)}}
        if self.namespace_name:
            peer["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": self.namespace_name}}
        elif self.namespace_labels is not None:
            peer["namespaceSelector"] = {"matchLabels": dict(self.namespace_labels)}
        elif self.any_namespace:
            peer["namespaceSelector"] = {}
        return peer


@dataclass(frozen=True)
class Port:
    """A port, or the range ``port``..``end_port``, of one protocol."""

    port: int
    end_port: int | None = None
    protocol: str = "TCP"

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"protocol": self.protocol, "port": self.port}
        if self.end_port is not None:
            entry["endPort"] = self.end_port
        return entry


@dataclass(frozen=True, kw_only=True)
class IngressRule:
    """Traffic from ``peers`` to ``ports`` (all ports when empty; a bare int is a TCP port)."""

    peers: Sequence[Peer]
    ports: Sequence[int | Port] = ()

    def _ports(self) -> list[dict[str, Any]]:
        return [(p if isinstance(p, Port) else Port(p)).to_dict() for p in self.ports]

    def to_dict(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"from": [p.to_dict() for p in self.peers]}
        if self.ports:
            rule["ports"] = self._ports()
        return rule


@dataclass(frozen=True, kw_only=True)
class EgressRule(IngressRule):
    """Traffic to ``peers`` on ``ports`` (all ports when empty)."""

    def to_dict(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"to": [p.to_dict() for p in self.peers]}
        if self.ports:
            rule["ports"] = self._ports()
        return rule


def network_policy(name: str, namespace_: str, *, pod_labels: Mapping[str, str],
                   ingress: Sequence[IngressRule] | None = None, egress: Sequence[EgressRule] | None = None,
                   pod_expressions: Sequence[Mapping[str, Any]] = (),
                   labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Allow-lists for the selected pods (``pod_labels``, and ``pod_expressions`` as ``matchExpressions``).

    A direction given (even empty) isolates the selected pods in it: anything no policy of theirs lists is denied.
    Policies add up, so a pod's allow-list is the union of every policy that selects it.
    """
    selector: dict[str, Any] = {"matchLabels": dict(pod_labels)}
    if pod_expressions:
        selector["matchExpressions"] = [dict(e) for e in pod_expressions]
    spec: dict[str, Any] = {"podSelector": selector, "policyTypes": []}
    if ingress is not None:
        spec["policyTypes"].append("Ingress")
        spec["ingress"] = [r.to_dict() for r in ingress]
    if egress is not None:
        spec["policyTypes"].append("Egress")
        spec["egress"] = [r.to_dict() for r in egress]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace_, "labels": {**PART_OF, **(labels or {})}},
        "spec": spec,
    }


DNS = Peer(namespace_name="kube-system", pod_labels={"k8s-app": "kube-dns"})
"""CoreDNS, which EKS runs in ``kube-system`` with this label."""
DNS_PORTS = (Port(53, protocol="UDP"), Port(53))
POD_IDENTITY_AGENT = Peer(cidr="169.254.170.23/32")
"""The EKS Pod Identity agent on every node: pods fetch their role's credentials from it on port 80."""
POD_IDENTITY_AGENT_PORT = 80
NOT_PUBLIC = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8")
PUBLIC_HTTPS = Peer(cidr="0.0.0.0/0", except_cidrs=NOT_PUBLIC)
"""S3 through the VPC's gateway endpoint. A gateway endpoint has no address in the VPC: the route tables send S3's
public prefixes to it, so a policy can only name S3 by public address, and S3's prefixes change without notice. This
peer is every public address on 443, which admits S3 and, through the NAT gateway, any other HTTPS server on the
internet; nothing private (the VPC, the pods, the instance metadata service) is in it."""
KUBERNETES_SERVICE_IPS = ("10.100.0.1/32", "172.20.0.1/32")
"""The ``kubernetes`` Service's ClusterIP: the first address of the service range, which EKS takes from 10.100.0.0/16
or 172.20.0.0/16 when the cluster names none (ours names none)."""


def dns_egress() -> EgressRule:
    return EgressRule(peers=[DNS], ports=DNS_PORTS)


def aws_egress() -> list[EgressRule]:
    """Pods that use AWS: their role's credentials from the Pod Identity agent, and S3 (see :data:`PUBLIC_HTTPS`)."""
    return [EgressRule(peers=[POD_IDENTITY_AGENT], ports=[POD_IDENTITY_AGENT_PORT]),
            EgressRule(peers=[PUBLIC_HTTPS], ports=[443])]


def api_server_egress(control_plane_cidrs: Sequence[str]) -> EgressRule:
    """The Kubernetes API server: its ClusterIP, and the subnets where EKS puts the control plane's network interfaces
    (the cluster's subnets), since an implementation may see either side of the Service's address translation."""
    return EgressRule(peers=[*(Peer(cidr=c) for c in (*KUBERNETES_SERVICE_IPS, *control_plane_cidrs))], ports=[443])


def default_deny(namespace_: str) -> dict[str, Any]:
    """Every pod of the namespace isolated both ways: what another policy does not allow is refused."""
    return network_policy("default-deny", namespace_, pod_labels={}, ingress=[], egress=[])


def pod_disruption_budget(name: str, namespace_: str, *, pod_labels: Mapping[str, str], max_unavailable: int = 1,
                          min_available: int | None = None,
                          labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """At most ``max_unavailable`` of the selected pods evicted at a time; or, with ``min_available``, never fewer than
    that many left (the two are exclusive in a PodDisruptionBudget)."""
    budget = {"minAvailable": min_available} if min_available is not None else {"maxUnavailable": max_unavailable}
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace_, "labels": {**PART_OF, **(labels or {})}},
        "spec": {**budget, "selector": {"matchLabels": dict(pod_labels)}},
    }

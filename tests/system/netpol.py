"""NetworkPolicy semantics, to evaluate the synthesized policies against the flows the platform needs.

Kubernetes semantics (kubernetes/api networking/v1 types.go, the NetworkPolicy docs): a pod is isolated for
a direction once any policy selecting it lists that type (``policyTypes``; Ingress is implied, Egress when
egress rules exist); traffic to an isolated pod is allowed only if some selecting policy has a rule whose
peers and ports both match. A rule without ``from``/``to`` matches every peer; without ``ports`` every
port. A peer with only ``podSelector`` means pods of the policy's namespace; only ``namespaceSelector`` means
every pod of the matching namespaces; both means matching pods in matching namespaces; ``ipBlock`` matches
addresses (``except`` carved out). A named port resolves against the destination pod's container ports;
``endPort`` makes a range. Namespaces carry ``kubernetes.io/metadata.name`` automatically.

The Amazon VPC CNI network policy agent adds one thing: traffic from the pod's own node always passes
(aws/aws-network-policy-agent pkg/fwruleprocessor/fw_rule_processor.go adds the node IP as allow-all "so
kubelet liveness/readiness probes are never blocked"); a probe arrives from the node's primary address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    """A pod (``labels``, ``namespace``, ``ports``) or an address outside any pod (``labels`` empty, no namespace)."""

    name: str
    ip: str
    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    ports: dict[str, int] = field(default_factory=dict, hash=False)
    node_ip: str | None = None

    @property
    def is_pod(self) -> bool:
        return self.namespace is not None


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions", []):
        op, k, vals = expr["operator"], expr["key"], expr.get("values", [])
        if (op == "In" and labels.get(k) not in vals) or (op == "NotIn" and labels.get(k) in vals) or (
                op == "Exists" and k not in labels) or (op == "DoesNotExist" and k in labels):
            return False
    return True


@dataclass
class Policies:
    policies: list[dict[str, Any]]
    namespaces: dict[str, dict[str, str]]

    def _ns_labels(self, ns: str) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": ns, **self.namespaces.get(ns, {})}

    def _selecting(self, pod: Endpoint, direction: str) -> list[dict[str, Any]]:
        out = []
        for p in self.policies:
            spec = p["spec"]
            types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))
            if (p["metadata"]["namespace"] == pod.namespace and direction in types
                    and selector_matches(spec.get("podSelector", {}), pod.labels)):
                out.append(p)
        return out

    def _peer_matches(self, peer: dict[str, Any], other: Endpoint, policy_ns: str) -> bool:
        if "ipBlock" in peer:
            ip = ipaddress.ip_address(other.ip)
            block = peer["ipBlock"]
            return ip in ipaddress.ip_network(block["cidr"]) and not any(
                ip in ipaddress.ip_network(e) for e in block.get("except", []))
        if not other.is_pod:
            return False
        ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
        assert other.namespace is not None
        ns_ok = selector_matches(ns_sel, self._ns_labels(other.namespace)) if ns_sel is not None else (
            other.namespace == policy_ns)
        pod_ok = selector_matches(pod_sel, other.labels) if pod_sel is not None else True
        return ns_ok and pod_ok

    @staticmethod
    def _port_matches(entry: dict[str, Any], port: int, protocol: str, target: Endpoint) -> bool:
        if entry.get("protocol", "TCP") != protocol:
            return False
        if "port" not in entry:
            return True
        p = entry["port"]
        start = target.ports.get(p) if isinstance(p, str) else p
        if start is None:
            return False
        return start <= port <= entry.get("endPort", start)

    def _allowed(self, pod: Endpoint, other: Endpoint, port: int, protocol: str, direction: str,
                 target: Endpoint) -> bool:
        selecting = self._selecting(pod, direction)
        if not selecting:
            return True
        if direction == "Ingress" and other.ip == pod.node_ip:
            return True  # the VPC CNI agent: the pod's own node always passes
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        for p in selecting:
            for rule in p["spec"].get(key, []):
                peers = rule.get(peers_key)
                if peers and not any(self._peer_matches(x, other, p["metadata"]["namespace"]) for x in peers):
                    continue
                entries = rule.get("ports")
                if entries and not any(self._port_matches(e, port, protocol, target) for e in entries):
                    continue
                return True
        return False

    def allows(self, src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> bool:
        """Both ends agree: the source's egress policies and the destination's ingress policies."""
        egress = not src.is_pod or self._allowed(src, dst, port, protocol, "Egress", dst)
        ingress = not dst.is_pod or self._allowed(dst, src, port, protocol, "Ingress", dst)
        return egress and ingress

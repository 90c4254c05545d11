"""The compile Jobs' pods under the synthesized NetworkPolicies, enforced: nothing reaches them, and they reach only
what compiling needs (the same world as tests/system/test_network_policies.py: pods as KubeRay and the Job
controller create them, policies evaluated by tests/system/netpol.py).

A compile pod writes what every replica loads, so a request that takes over any pod must not be able to talk to it.
"""

from __future__ import annotations

from tests.system.netpol import Endpoint
from tests.system.test_network_policies import (
    CLIENT,
    COREDNS,
    INTERNET,
    OPERATOR,
    POD_IDENTITY_AGENT,
    S3,
    STRANGER,
    World,
    world,
)

__all__ = ["world"]  # the module-scoped fixture of test_network_policies, shared here

PORTS = (22, 80, 443, 6379, 8000, 8080, 8265, 10001, 52365)


def compile_pods(w: World) -> list[Endpoint]:
    return [p for p in w.other_jobs if p.labels.get("eks-inference/role") == "compile"]


def test_no_pod_and_no_address_reaches_a_compile_pod(world: World) -> None:
    """GIVEN every pod a deploy starts (Ray heads and workers, load-test clients, a pod someone runs in the serving
    namespace, pods of other namespaces, the operator) and addresses outside the cluster
    WHEN each tries to open a connection to a compile pod, on any port
    THEN the policies refuse it: a compromised replica cannot talk to the only writer of what replicas load."""
    targets = compile_pods(world)
    assert len(targets) == 2  # one per model x processor of dev
    sources = [*world.ray.values(), *world.clients, world.in_serving_namespace, STRANGER, CLIENT, OPERATOR, INTERNET,
               *world.scrapers]
    for target in targets:
        for src in sources:
            for port in PORTS:
                assert not world.policies.allows(src, target, port), (src.name, target.name, port)


def test_a_compile_pod_reaches_what_compiling_needs_and_no_ray_cluster(world: World) -> None:
    """GIVEN a compile pod
    WHEN it connects out
    THEN it resolves names and reaches its credentials and S3, but no port of any Ray cluster."""
    for pod in compile_pods(world):
        assert world.policies.allows(pod, COREDNS, 53, "UDP") and world.policies.allows(pod, COREDNS, 53, "TCP")
        assert world.policies.allows(pod, POD_IDENTITY_AGENT, 80) and world.policies.allows(pod, S3, 443)
        for ray_pod in world.ray.values():
            for port in PORTS:
                assert not world.policies.allows(pod, ray_pod, port), (pod.name, ray_pod.name, port)

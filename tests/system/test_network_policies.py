"""The synthesized NetworkPolicies, enforced (the vpc-cni add-on turns enforcement on), against every flow
the platform needs and a few it must refuse (evaluator: tests/system/netpol.py; pods as KubeRay v1.7.0
builds them: tests/system/kuberay.py; the operator's labels from kuberay helm-chart/kuberay-operator
templates/deployment.yaml at v1.7.0)."""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

import pytest

from eks_inference.k8s.ray_service import RAY_PORTS, SERVE_DIRECT_INGRESS_PORTS, SERVE_PORT
from eks_inference.observability.scrape import NEURON_MONITOR_PORT
from tests.conftest import Assembly
from tests.system import kuberay
from tests.system.cfn import MANIFEST_TYPE, manifest_objects
from tests.system.netpol import Endpoint, Policies
from tests.system.synthesized import objects

POD_IDENTITY_AGENT = Endpoint("eks-pod-identity-agent (on the node)", "169.254.170.23")
S3 = Endpoint("S3 through the gateway endpoint", "52.92.16.10")
COREDNS = Endpoint("coredns", "10.0.200.10", "kube-system", {"k8s-app": "kube-dns"}, {"dns": 53, "dns-tcp": 53})
OPERATOR = Endpoint("kuberay-operator", "10.0.200.20", "kuberay-system",
                    {"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/component": "kuberay-operator",
                     "app.kubernetes.io/instance": "kuberay-operator"})
STRANGER = Endpoint("a pod in another namespace", "10.0.200.30", "default", {"app": "curl"})
OTHER_NODE = Endpoint("another node", "10.0.150.99")


def cluster_objects(asm: Assembly, kind: str) -> list[dict[str, Any]]:
    """Objects the Cluster stack applies (the monitoring namespace, its exporters and NetworkPolicy)."""
    return [o for r in asm.template("-Cluster")["Resources"].values() if r["Type"] == MANIFEST_TYPE
            for o in manifest_objects(r) if o["kind"] == kind]


class World:
    """Every pod a deploy of ``asm`` starts, with addresses, plus the policies and namespaces it applies."""

    def __init__(self, asm: Assembly) -> None:
        self.policies = Policies(
            [*objects(asm, "NetworkPolicy"), *cluster_objects(asm, "NetworkPolicy")],
            {n["metadata"]["name"]: n["metadata"].get("labels", {})
             for n in [*objects(asm, "Namespace"), *cluster_objects(asm, "Namespace")]})
        cidrs = sorted(r["Properties"]["CidrBlock"] for r in asm.template("-Cluster")["Resources"].values()
                       if r["Type"] == "AWS::EC2::Subnet")
        self.scrapers = [Endpoint(f"managed scraper ENI in {c}", str(next(ipaddress.ip_network(c).hosts())))
                         for c in cidrs]
        (ds,) = cluster_objects(asm, "DaemonSet")
        tpl = ds["spec"]["template"]
        self.neuron_monitor = Endpoint("neuron-monitor", "10.0.90.10", ds["metadata"]["namespace"],
                                       tpl["metadata"]["labels"],
                                       {p["name"]: p["containerPort"] for p in tpl["spec"]["containers"][0]["ports"]},
                                       "10.0.90.1")
        ips = (f"10.0.{i // 200}.{i % 200 + 10}" for i in itertools.count())
        nodes = (f"10.0.100.{i + 10}" for i in itertools.count())
        self.ray: dict[tuple[str, str], Endpoint] = {}
        self.pod_specs: dict[Endpoint, dict[str, Any]] = {}
        for rs in objects(asm, "RayService"):
            for pod in kuberay.build_pods(rs):
                c = pod["spec"]["containers"][0]
                ep = Endpoint(pod["metadata"]["name"], next(ips), pod["metadata"]["namespace"],
                              pod["metadata"]["labels"], {p["name"]: p["containerPort"] for p in c["ports"]},
                              next(nodes))
                self.ray[(rs["metadata"]["name"], "head" if pod["head"] else "worker")] = ep
                self.pod_specs[ep] = pod
        self.clients: list[Endpoint] = []
        for job in objects(asm, "Job"):
            name = job["metadata"]["name"]
            labels = {**job["spec"]["template"]["metadata"]["labels"], "batch.kubernetes.io/job-name": name,
                      "job-name": name, "batch.kubernetes.io/controller-uid": "uid", "controller-uid": "uid"}
            self.clients.append(Endpoint(name, next(ips), job["metadata"]["namespace"], labels, {}, next(nodes)))

    def node_of(self, pod: Endpoint) -> Endpoint:
        return Endpoint(f"node of {pod.name}", str(pod.node_ip))


@pytest.fixture(scope="module")
def world(redeploy: dict[str, Assembly]) -> World:
    return World(redeploy["before"])


def probe_ports(pod: dict[str, Any]) -> list[int]:
    c = pod["spec"]["containers"][0]
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    out = []
    for probe in ("readinessProbe", "livenessProbe"):
        port = c[probe]["httpGet"]["port"]
        out.append(named[port] if isinstance(port, str) else port)
    return out


def test_the_world_has_every_pod(world: World) -> None:
    assert sorted(world.ray) == [("minilm-graviton", "head"), ("minilm-graviton", "worker"),
                                 ("minilm-inferentia", "head"), ("minilm-inferentia", "worker")]
    assert len(world.clients) == 3 and world.policies.policies


def test_kuberay_reaches_each_head(world: World) -> None:
    """The operator reads Serve status from the dashboard, checks the head's proxy on the serve port, and
    the dashboard agent (v1.7.0 rayservice controller)."""
    for (_, role), pod in world.ray.items():
        if role == "head":
            for port in (RAY_PORTS.dashboard, RAY_PORTS.dashboard_agent_listen, SERVE_PORT):
                assert world.policies.allows(OPERATOR, pod, port), (pod.name, port)


def test_heads_and_workers_of_one_service_reach_each_other_on_every_ray_port(world: World) -> None:
    p = RAY_PORTS
    ports = [p.gcs, p.node_manager, p.object_manager, p.runtime_env_agent, p.dashboard_agent_grpc,
             p.dashboard_agent_listen, p.metrics_export, p.dashboard, p.client_server, p.min_worker, p.max_worker,
             SERVE_PORT, *(r for rng in SERVE_DIRECT_INGRESS_PORTS for r in rng)]
    for service in ("minilm-graviton", "minilm-inferentia"):
        head, worker = world.ray[(service, "head")], world.ray[(service, "worker")]
        for src, dst in ((head, worker), (worker, head)):
            for port in ports:
                assert world.policies.allows(src, dst, port), (src.name, dst.name, port)


def test_kubelet_probes_pass(world: World) -> None:
    """Readiness probes we set and the liveness probe KubeRay injects come from the pod's own node."""
    for ep, pod in world.pod_specs.items():
        for port in probe_ports(pod):
            assert world.policies.allows(world.node_of(ep), ep, port), (ep.name, port)


def test_load_test_clients_reach_the_serve_port_of_every_pod_behind_the_service(world: World) -> None:
    clients = [c for c in world.clients if c.labels["app.kubernetes.io/component"] == "loadtest-client"]
    assert len(clients) == 2
    for client, ray_pod in itertools.product(clients, world.ray.values()):
        assert world.policies.allows(client, ray_pod, SERVE_PORT)


def test_pods_reach_dns_s3_and_the_pod_identity_agent(world: World) -> None:
    for pod in [*world.ray.values(), *world.clients]:
        assert world.policies.allows(pod, COREDNS, 53, "UDP") and world.policies.allows(pod, COREDNS, 53, "TCP")
        assert world.policies.allows(pod, S3, 443)
        assert world.policies.allows(pod, POD_IDENTITY_AGENT, 80)


def test_unrelated_flows_are_refused(world: World) -> None:
    client = world.clients[0]
    for ray_pod in world.ray.values():
        for port in (RAY_PORTS.gcs, RAY_PORTS.dashboard, RAY_PORTS.node_manager, RAY_PORTS.min_worker):
            assert not world.policies.allows(client, ray_pod, port), (client.name, ray_pod.name, port)
        assert not world.policies.allows(STRANGER, ray_pod, SERVE_PORT)
        assert not world.policies.allows(OTHER_NODE, ray_pod, RAY_PORTS.gcs)
        assert not world.policies.allows(OPERATOR, ray_pod, RAY_PORTS.gcs)
    grav, inf = world.ray[("minilm-graviton", "worker")], world.ray[("minilm-inferentia", "head")]
    assert not world.policies.allows(grav, inf, RAY_PORTS.gcs)  # one RayService cannot join another
    for c in world.clients:
        assert not world.policies.allows(STRANGER, c, 8080) and not world.policies.allows(grav, c, 8080)


def test_evaluator_semantics_on_a_known_policy() -> None:
    """Self-check of tests/system/netpol.py against the documented NetworkPolicy examples' meaning."""
    pol = {"metadata": {"namespace": "a"}, "spec": {
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"team": "x"}}, "podSelector": {"matchLabels": {
                "role": "fe"}}}], "ports": [{"port": "pg"}]},
            {"from": [{"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}}],
             "ports": [{"port": 7000, "endPort": 7010}]},
        ]}}
    policies = Policies([pol], {"b": {"team": "x"}})
    db = Endpoint("db", "10.1.0.1", "a", {"app": "db"}, {"pg": 5432}, "10.9.0.1")
    fe_b = Endpoint("fe", "10.1.0.2", "b", {"role": "fe"})
    fe_a = Endpoint("fe", "10.1.0.3", "a", {"role": "fe"})
    assert policies.allows(fe_b, db, 5432) and not policies.allows(fe_b, db, 5433)
    assert not policies.allows(fe_a, db, 5432)  # both selectors in one peer: AND, and a has no team label
    assert policies.allows(Endpoint("x", "172.17.2.1"), db, 7005)
    assert not policies.allows(Endpoint("x", "172.17.1.1"), db, 7005)
    assert policies.allows(Endpoint("node", "10.9.0.1"), db, 1)  # the VPC CNI agent's own-node rule
    assert policies.allows(fe_a, fe_b, 1)  # nothing selects fe: not isolated


def test_the_managed_scraper_reaches_the_metrics_ports_and_nothing_else(world: World) -> None:
    """Its network interfaces live only in its own subnets (constructs/observability.py), which the policies name."""
    assert len(world.scrapers) == 2
    p = RAY_PORTS
    for scraper, pod in itertools.product(world.scrapers, world.ray.values()):
        assert world.policies.allows(scraper, pod, p.metrics_export), (scraper.name, pod.name)
        for port in (SERVE_PORT, p.gcs, p.dashboard, p.dashboard_agent_listen, p.node_manager, p.min_worker):
            assert not world.policies.allows(scraper, pod, port), (scraper.name, pod.name, port)
    for scraper in world.scrapers:
        assert world.policies.allows(scraper, world.neuron_monitor, NEURON_MONITOR_PORT)


def test_load_test_clients_read_the_metrics_of_every_pod_of_their_target(world: World) -> None:
    """Client 0 reads each step's server-side figures from every Ray pod's metrics port."""
    clients = [c for c in world.clients if c.labels["app.kubernetes.io/component"] == "loadtest-client"]
    for client, pod in itertools.product(clients, world.ray.values()):
        assert world.policies.allows(client, pod, RAY_PORTS.metrics_export)


def test_nothing_else_reads_metrics(world: World) -> None:
    grav = world.ray[("minilm-graviton", "worker")]
    for pod in world.ray.values():
        for src in (STRANGER, OPERATOR, OTHER_NODE):
            assert not world.policies.allows(src, pod, RAY_PORTS.metrics_export), (src.name, pod.name)
    assert not world.policies.allows(grav, world.ray[("minilm-inferentia", "head")], RAY_PORTS.metrics_export)
    for src in (STRANGER, grav, OTHER_NODE, *world.clients):
        assert not world.policies.allows(src, world.neuron_monitor, NEURON_MONITOR_PORT), src.name
    assert world.policies.allows(world.node_of(world.neuron_monitor), world.neuron_monitor, NEURON_MONITOR_PORT)

"""The synthesized NetworkPolicies, enforced (the vpc-cni add-on turns enforcement on), against every flow
the platform needs and a few it must refuse (evaluator: tests/system/netpol.py; pods as KubeRay v1.7.0
builds them: tests/system/kuberay.py; the operator's labels from kuberay helm-chart/kuberay-operator
templates/deployment.yaml at v1.7.0; what the operator connects to: eks_inference/k8s/kuberay_operator.py).

Pods get addresses in the private subnets, as the VPC CNI gives them their node's subnet."""

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
IMDS = Endpoint("the instance metadata service", "169.254.169.254")
S3 = Endpoint("S3 through the gateway endpoint", "52.92.16.10")
INTERNET = Endpoint("a server on the internet", "93.184.216.34")
API_SERVICE = Endpoint("the kubernetes Service (ClusterIP)", "172.20.0.1")
API_ENI = Endpoint("an EKS control-plane network interface", "10.0.70.5")
VPC_HOST = Endpoint("a host in a public subnet", "10.0.1.9")
COREDNS = Endpoint("coredns", "10.0.120.10", "kube-system", {"k8s-app": "kube-dns"}, {"dns": 53, "dns-tcp": 53})
OPERATOR = Endpoint("kuberay-operator", "10.0.120.20", "kuberay-system",
                    {"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/component": "kuberay-operator",
                     "app.kubernetes.io/instance": "kuberay-operator"})
NEXT_TO_OPERATOR = Endpoint("another pod in kuberay-system", "10.0.120.21", "kuberay-system", {"app": "debug"})
STRANGER = Endpoint("a pod in another namespace", "10.0.120.30", "default", {"app": "curl"})
CLIENT = Endpoint("a pod of a namespace labelled as a serving client", "10.0.120.40", "shop", {"app": "web"})
OTHER_NODE = Endpoint("another node", "10.0.150.99")
NAMESPACES_OUTSIDE = {"shop": {"eks-inference/serving-client": "true"}, "default": {}, "kube-system": {},
                      "kuberay-system": {}}
"""Namespaces the app does not create, with the labels a cluster administrator gave them."""


def cluster_objects(asm: Assembly, kind: str) -> list[dict[str, Any]]:
    """Objects the Cluster stack applies (the monitoring namespace, its exporters and NetworkPolicy)."""
    return [o for r in asm.template("-Cluster")["Resources"].values() if r["Type"] == MANIFEST_TYPE
            for o in manifest_objects(r) if o["kind"] == kind]


class World:
    """Every pod a deploy of ``asm`` starts, with addresses, plus the policies and namespaces it applies."""

    def __init__(self, asm: Assembly) -> None:
        self.policies = Policies(
            [*objects(asm, "NetworkPolicy"), *cluster_objects(asm, "NetworkPolicy")],
            {**NAMESPACES_OUTSIDE, **{n["metadata"]["name"]: n["metadata"].get("labels", {})
                                      for n in [*objects(asm, "Namespace"), *cluster_objects(asm, "Namespace")]}})
        self.private_cidrs = [r["Properties"]["CidrBlock"] for r in asm.template("-Network")["Resources"].values()
                              if r["Type"] == "AWS::EC2::Subnet" and {"Key": "aws-cdk:subnet-type", "Value": "Private"}
                              in r["Properties"].get("Tags", [])]
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
        ips = (f"10.0.{64 + i // 200}.{i % 200 + 10}" for i in itertools.count())
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
        """The load-test pods."""
        self.other_jobs: list[Endpoint] = []
        """Pods of the app's other Jobs (in the serving namespace, not part of a Ray cluster)."""
        for job in objects(asm, "Job"):
            name = job["metadata"]["name"]
            labels = {**job["spec"]["template"]["metadata"]["labels"], "batch.kubernetes.io/job-name": name,
                      "job-name": name, "batch.kubernetes.io/controller-uid": "uid", "controller-uid": "uid"}
            pod = Endpoint(name, next(ips), job["metadata"]["namespace"], labels, {}, next(nodes))
            (self.clients if labels.get("eks-inference/role") == "loadtest" else self.other_jobs).append(pod)
        self.in_serving_namespace = Endpoint("a pod in the serving namespace, not part of a Ray cluster", next(ips),
                                             "eks-inference", {"app": "debug"}, {}, next(nodes))

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


def test_kuberay_reaches_each_head_on_the_dashboard_and_serve_ports_only(world: World) -> None:
    """The operator reads Serve status from and pushes Serve config to the head's dashboard, and checks the head's
    proxy on the serve port (v1.7.0 rayservice controller); nothing on the workers, nothing on the dashboard agent.
    Another pod of its namespace gets none of it."""
    p = RAY_PORTS
    for (_, role), pod in world.ray.items():
        for port in (p.dashboard, SERVE_PORT):
            assert world.policies.allows(OPERATOR, pod, port) is (role == "head"), (pod.name, port)
            assert not world.policies.allows(NEXT_TO_OPERATOR, pod, port), (pod.name, port)
        for port in (p.dashboard_agent_listen, p.gcs, p.client_server, p.node_manager, p.metrics_export):
            assert not world.policies.allows(OPERATOR, pod, port), (pod.name, port)


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


def test_pods_reach_dns_and_those_with_aws_credentials_s3_and_the_pod_identity_agent(world: World) -> None:
    """Every pod resolves names; workers and load-test clients (EKS Pod Identity roles) reach their credentials and S3;
    the heads, which hold no AWS credentials, reach neither, but reach the API server for their autoscaler."""
    for pod in [*world.ray.values(), *world.clients]:
        assert world.policies.allows(pod, COREDNS, 53, "UDP") and world.policies.allows(pod, COREDNS, 53, "TCP")
        aws = pod.labels.get("eks-inference/ray-role") != "head"
        assert world.policies.allows(pod, S3, 443) is aws and world.policies.allows(pod, POD_IDENTITY_AGENT, 80) is aws
        assert world.policies.allows(pod, API_SERVICE, 443) is (not aws), pod.name


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


CONTROL_PLANE_PORTS = {RAY_PORTS.dashboard: "dashboard", RAY_PORTS.dashboard_agent_listen: "dashboard agent",
                       RAY_PORTS.gcs: "GCS", RAY_PORTS.client_server: "Ray client"}
PORTS = [(53, "UDP"), *((p, "TCP") for p in (22, 53, 80, 443, 6379, 6380, 8000, 8080, 8265, 9010, 10001, 10250,
                                               30000, 52365))]


def every_destination(world: World) -> list[Endpoint]:
    return [*world.ray.values(), *world.clients, *world.other_jobs, world.in_serving_namespace, world.neuron_monitor,
            *world.scrapers,
            OPERATOR, NEXT_TO_OPERATOR, STRANGER, CLIENT, COREDNS, POD_IDENTITY_AGENT, IMDS, S3, INTERNET, API_SERVICE,
            API_ENI, VPC_HOST, OTHER_NODE]


def reached(world: World, src: Endpoint) -> set[tuple[str, int, str]]:
    return {(dst.name, port, proto) for dst in every_destination(world) for port, proto in PORTS
            if dst is not src and world.policies.allows(src, dst, port, proto)}


def is_public(ip: str) -> bool:
    return ipaddress.ip_address(ip).is_global


def test_no_pod_outside_a_ray_cluster_reaches_its_control_plane(world: World) -> None:
    """GIVEN pods that are not part of a RayService's Ray cluster (a pod in the serving namespace, another
    RayService's pods, the load-test clients, a client namespace's pod, another pod of the operator's namespace, a pod
    elsewhere, another node) WHEN they connect to its pods THEN none reaches the dashboard (job submission, Serve
    deployments), the dashboard agent, the GCS or the Ray client port, on the head or on a worker."""
    outsiders = [world.in_serving_namespace, *world.other_jobs, *world.clients, CLIENT, NEXT_TO_OPERATOR, STRANGER,
                 OTHER_NODE]
    for (service, _), pod in world.ray.items():
        others = [o for (s, _), o in world.ray.items() if s != service]
        for src in [*outsiders, *others]:
            for port, what in CONTROL_PLANE_PORTS.items():
                assert not world.policies.allows(src, pod, port), f"{src.name} reaches the {what} of {pod.name}"


def test_a_serving_pod_reaches_no_address_outside_its_allow_list(world: World) -> None:
    """GIVEN every destination in and around the cluster on the ports that matter WHEN a Ray pod connects THEN it
    reaches nothing beyond its allow-list: its own RayService's pods; CoreDNS; a worker also the Pod Identity agent and
    HTTPS on public addresses (S3 through the gateway endpoint); a head also HTTPS to the API server, by its
    ClusterIP or in the cluster's subnets (its autoscaler). Not the instance metadata service, another RayService, the
    operator, the load-test clients, the exporters, another namespace or a private address."""
    for (service, role), src in world.ray.items():
        own = {o.name for (s, _), o in world.ray.items() if s == service}

        def allowed(name: str, port: int, proto: str, src: Endpoint = src, own: set[str] = own,
                    role: str = role) -> bool:
            dst = next(d for d in every_destination(world) if d.name == name)
            if name in own or (dst is COREDNS and port == 53):
                return True
            if role == "worker":
                return (dst is POD_IDENTITY_AGENT and port == 80) or (port == 443 and is_public(dst.ip))
            return port == 443 and (dst is API_SERVICE or any(
                ipaddress.ip_address(dst.ip) in ipaddress.ip_network(c) for c in world.private_cidrs))

        got = reached(world, src)
        assert {r for r in got if not allowed(*r)} == set(), src.name
        needed = {(COREDNS.name, 53, "UDP")} | {(o, 6379, "TCP") for o in own - {src.name}}
        needed |= ({(POD_IDENTITY_AGENT.name, 80, "TCP"), (S3.name, 443, "TCP")} if role == "worker"
                   else {(API_SERVICE.name, 443, "TCP"), (API_ENI.name, 443, "TCP")})
        assert needed <= got, (src.name, needed - got)
        assert not any(world.policies.allows(src, IMDS, port) for port in (80, 443))


def test_load_test_clients_and_the_operator_reach_only_what_they_need(world: World) -> None:
    """Clients: DNS, their credentials, HTTPS on public addresses (S3), and the Ray pods' serve and metrics ports.
    The operator: DNS, the API server (ClusterIP or the cluster's subnets on 443), the heads' dashboard and serve
    ports."""
    ray = {p.name: p for p in world.ray.values()}
    for client in world.clients:
        for name, port, _ in reached(world, client):
            assert (name == COREDNS.name and port == 53) or (name == POD_IDENTITY_AGENT.name and port == 80) or (
                name in ray and port in (SERVE_PORT, RAY_PORTS.metrics_export)) or (
                port == 443 and name in (S3.name, INTERNET.name)), (client.name, name, port)
    heads = {p.name for (_, role), p in world.ray.items() if role == "head"}
    for name, port, _ in reached(world, OPERATOR):
        dst = next(d for d in every_destination(world) if d.name == name)
        assert (dst is COREDNS and port == 53) or (name in heads and port in (RAY_PORTS.dashboard, SERVE_PORT)) or (
            port == 443 and not is_public(dst.ip) and not dst.ip.startswith("169.254.")), (name, port)
    assert world.policies.allows(OPERATOR, API_SERVICE, 443) and world.policies.allows(OPERATOR, API_ENI, 443)


def test_the_exporters_reach_nothing(world: World) -> None:
    assert reached(world, world.neuron_monitor) == set()


def test_client_namespaces_reach_the_serve_port_and_nothing_else_of_a_ray_cluster(world: World) -> None:
    """A namespace a cluster administrator labelled ``eks-inference/serving-client=true`` calls the models' API; no
    other namespace does, and a pod label set in the serving namespace does not stand in for the namespace label."""
    for pod in world.ray.values():
        assert world.policies.allows(CLIENT, pod, SERVE_PORT)
        assert not world.policies.allows(STRANGER, pod, SERVE_PORT)
        assert not world.policies.allows(world.in_serving_namespace, pod, SERVE_PORT)
        forged = Endpoint("a pod labelled as the old ingress role", "10.0.121.5", "eks-inference",
                          {"eks-inference/role": "ingress"}, {}, "10.0.121.1")
        assert not world.policies.allows(forged, pod, SERVE_PORT)
        for port in (RAY_PORTS.metrics_export, *CONTROL_PLANE_PORTS):
            assert not world.policies.allows(CLIENT, pod, port)


def test_inside_the_serving_namespace_a_copied_label_passes_the_network_and_the_token_decides(world: World) -> None:
    """What NetworkPolicy cannot do: Ray peers are told apart by pod labels within the namespace, so a pod created
    there with a Ray pod's labels passes them. Creating pods in the serving namespace is an administrator's right
    (no service account there may), and Ray's token authentication refuses it anyway
    (tests/system/test_ray_auth.py)."""
    head = world.ray[("minilm-graviton", "head")]
    copy = Endpoint("a pod copying a Ray pod's labels", "10.0.121.6", "eks-inference", dict(head.labels), {},
                    "10.0.121.1")
    assert world.policies.allows(copy, head, RAY_PORTS.gcs)


def test_the_front_doors_load_balancer_reaches_the_serve_port_and_no_pod_holds_its_addresses(
        world: World, redeploy: dict[str, Assembly]) -> None:
    """GIVEN dev's internal front door WHEN its load balancer's nodes (in its own subnets) connect THEN they reach
    every Ray pod's serve port (requests, health checks) and nothing else; its subnets overlap none of the nodes'
    private subnets, where the VPC CNI gives pods their addresses, so admitting them admits no pod."""
    resources = redeploy["before"].template("-Inference")["Resources"].values()
    door = [r["Properties"]["CidrBlock"] for r in resources if r["Type"] == "AWS::EC2::Subnet"]
    assert len(door) == len(world.private_cidrs) == 3
    assert not any(ipaddress.ip_network(d).overlaps(ipaddress.ip_network(p)) for d in door for p in world.private_cidrs)
    nodes = [Endpoint(f"load balancer node in {c}", str(next(ipaddress.ip_network(c).hosts()))) for c in door]
    for node, pod in itertools.product(nodes, world.ray.values()):
        assert world.policies.allows(node, pod, SERVE_PORT), (node.name, pod.name)
        for port in (RAY_PORTS.dashboard, RAY_PORTS.gcs, RAY_PORTS.metrics_export):
            assert not world.policies.allows(node, pod, port), (node.name, pod.name, port)

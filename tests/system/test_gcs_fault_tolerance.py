"""GCS fault tolerance: what KubeRay v1.7.0 does with the synthesized ``gcsFaultToleranceOptions``, who may reach the
store, and Ray itself losing its GCS under load on this machine.

* The pods KubeRay builds (tests/system/kuberay.py, ``configure_gcs_fault_tolerance`` and ``redis_cleanup_job``,
  from ray-operator/controllers/ray/common/pod.go and raycluster_controller.go at v1.7.0): the head gets the store's
  ``rediss://`` address, the auth token from the Secret and ``--redis-password=$REDIS_PASSWORD``; workers wait 600 s
  for a restarted GCS; the Redis cleanup Job runs with the head's labels.
* The NetworkPolicies (evaluator: tests/system/netpol.py) let the heads and that Job out to the store and nothing else.
* A real Ray 2.60 cluster (tests/ray_gcs.py): head and worker node against ``redis-server`` over TLS with a password;
  the GCS process is SIGKILLed while the project's load tester sends to the Serve app; requests keep succeeding; the
  head is started again as its container would be, and finds the app, the worker node and its replica in the store.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from eks_inference.k8s.ray_service import GCS_STORE_PORT, GCS_STORE_SECRET, GCS_STORE_SECRET_KEY, RAY_PORTS
from tests.conftest import Assembly
from tests.ray_gcs import STORAGE_NAMESPACE, GcsFtCluster, TlsRedis, kill_gcs_under_load, tool_missing
from tests.system import kuberay
from tests.system.netpol import Endpoint, Policies
from tests.system.synthesized import objects


@pytest.fixture(scope="module")
def prod(assemblies: dict[str, Assembly]) -> Assembly:
    return assemblies["prod"]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _store_host(asm: Assembly) -> str:
    """The replication group's primary endpoint as the resolved manifests name it (tests/system/cfn.py ``resolve``)."""
    (rid,) = [k for k, r in asm.template("-Inference")["Resources"].items()
              if r["Type"] == "AWS::ElastiCache::ReplicationGroup"]
    return f"{rid.lower()}-primaryendpoint.address"


def test_kuberay_gives_the_head_the_store_and_the_workers_time_to_wait(prod: Assembly) -> None:
    # GIVEN prod synthesized WHEN KubeRay builds each RayService's pods
    services = objects(prod, "RayService")
    assert services
    rg = _store_host(prod)
    for rs in services:
        pods = kuberay.build_pods(rs)
        (head,) = [p for p in pods if p["head"]]
        ray = head["spec"]["containers"][0]
        env = _env(ray)
        # THEN the head names the store over TLS on its port, and the token by Secret, never by value
        address = env["RAY_REDIS_ADDRESS"]
        assert address.startswith("rediss://") and address.endswith(f":{GCS_STORE_PORT}"), address
        assert address == f"rediss://{rg}:{GCS_STORE_PORT}"  # the replication group's endpoint, resolved at deploy
        assert env["REDIS_PASSWORD"] == {"secretKeyRef": {"name": GCS_STORE_SECRET, "key": GCS_STORE_SECRET_KEY}}
        assert env["RAY_external_storage_namespace"].startswith("uid-of-")  # the RayCluster's UID
        assert env["RAY_REDIS_CA_CERT"] == "/etc/ssl/certs/ca-certificates.crt"
        assert " --redis-password=$REDIS_PASSWORD " in ray["args"][0]
        for worker in (p for p in pods if not p["head"]):
            assert _env(worker["spec"]["containers"][0])[kuberay.GCS_RECONNECT_TIMEOUT_ENV] == "600"
            assert "REDIS_PASSWORD" not in _env(worker["spec"]["containers"][0])


def test_dev_heads_keep_their_state_in_memory(assemblies: dict[str, Assembly]) -> None:
    dev = assemblies["dev"]
    assert not [r for r in dev.template("-Inference")["Resources"].values()
                if r["Type"].startswith("AWS::ElastiCache::")]
    for rs in objects(dev, "RayService"):
        for pod in kuberay.build_pods(rs):
            env = _env(pod["spec"]["containers"][0])
            assert not {"RAY_REDIS_ADDRESS", "REDIS_PASSWORD", kuberay.GCS_RECONNECT_TIMEOUT_ENV} & set(env)


def test_only_heads_and_the_redis_cleanup_job_reach_the_store(prod: Assembly) -> None:
    # GIVEN prod's policies and pods as KubeRay builds them, the cleanup Job's pod among them
    namespaces = {n["metadata"]["name"]: n["metadata"].get("labels", {}) for n in objects(prod, "Namespace")}
    policies = Policies(objects(prod, "NetworkPolicy"), {**namespaces, "default": {}})
    subnets = [r["Properties"]["CidrBlock"] for r in prod.template("-Network")["Resources"].values()
               if r["Type"] == "AWS::EC2::Subnet" and {"Key": "aws-cdk:subnet-type", "Value": "Private"}
               in r["Properties"].get("Tags", [])]
    store = Endpoint("the store's primary, in a private subnet", str(next(ipaddress.ip_network(subnets[1]).hosts())))
    public = Endpoint("a host in a public subnet", "10.0.1.9")
    ips = (f"10.0.64.{i}" for i in range(10, 250))
    for rs in objects(prod, "RayService"):
        pods = kuberay.build_pods(rs)
        (head,) = [p for p in pods if p["head"]]
        cleanup = kuberay.redis_cleanup_job(head, f"{rs['metadata']['name']}-x7k2p")
        as_ep = {
            "head": Endpoint("head", next(ips), head["metadata"]["namespace"], head["metadata"]["labels"]),
            "cleanup": Endpoint("redis cleanup", next(ips), cleanup["metadata"]["namespace"],
                                {**cleanup["spec"]["template"]["metadata"]["labels"], "job-name": "x"}),
        }
        for w in (p for p in pods if not p["head"]):
            as_ep[f"worker {w['group']}"] = Endpoint("worker", next(ips), w["metadata"]["namespace"],
                                                     w["metadata"]["labels"])
        as_ep["stranger"] = Endpoint("another pod of the namespace", next(ips), head["metadata"]["namespace"],
                                     {"app": "debug"})
        # THEN heads and the cleanup Job reach the store's port, and only that port of it; nobody else does
        for name, ep in as_ep.items():
            allowed = name in ("head", "cleanup")
            assert policies.allows(ep, store, GCS_STORE_PORT) is allowed, (rs["metadata"]["name"], name)
            assert not policies.allows(ep, store, RAY_PORTS.gcs), (rs["metadata"]["name"], name)
            assert not policies.allows(ep, public, GCS_STORE_PORT), (rs["metadata"]["name"], name)


# ---------------------------------------------------------------------------------------------------
# Ray itself: the GCS killed under load
# ---------------------------------------------------------------------------------------------------

LEAD_S = 5.0
TAIL_S = 40.0
RATE = 10.0
MAX_FAILED_SHARE = 0.05
"""Locally the head's Serve proxy shares the HTTP port with the worker's (SO_REUSEPORT), so a request can land on the
head as it dies; in a cluster the serve Service routes to workers only (KubeRay labels the head ray.io/serve=false)."""


@pytest.fixture(scope="module")
def ft_cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    missing = tool_missing()
    if missing:
        pytest.skip(missing)
    root = Path(tmp_path_factory.mktemp("gcs", numbered=True))
    redis = TlsRedis(root)
    cluster = GcsFtCluster(root, redis)
    try:
        cluster.start()
        cluster.deploy()
        yield cluster
    finally:
        cluster.stop()
        redis.stop()


def test_the_store_takes_tls_with_the_password_only(ft_cluster: GcsFtCluster) -> None:
    redis = ft_cluster.redis
    assert redis.cli("PING") == "PONG"
    assert "NOAUTH" in redis.cli("PING", password="")
    assert "WRONGPASS" in redis.cli("PING", password="not-the-token")
    assert redis.cli("PING", tls=False) != "PONG"  # no plain-text port at all


def test_gcs_killed_under_load_serving_goes_on_and_the_head_returns_with_its_state(ft_cluster: GcsFtCluster) -> None:
    c = ft_cluster
    # GIVEN the app serving from the worker node, and the GCS state in the store under the cluster's namespace
    assert c.app_status() == "RUNNING"
    assert len(c.replica_pids()) == 1
    nodes = {n["id"]: n for n in c.wait_nodes(2)}
    (worker_node,) = [i for i, n in nodes.items() if n["alive"] and n["cpus"] > 0]
    assert any(STORAGE_NAMESPACE in k for k in c.redis.scan()), c.redis.scan()[:10]

    # WHEN the GCS gets SIGKILL while an open loop runs, and the head is started again once it has exited
    out = kill_gcs_under_load(c, rate=RATE, lead_s=LEAD_S, tail_s=TAIL_S)
    print(out.describe(RATE, TAIL_S))

    # THEN the requests sent from the kill on kept succeeding (the worker's proxy and replica need no GCS to serve)
    assert out.before_ok > 0, (out.before_ok, out.before_errors)
    assert out.sent > 0 and out.failed <= MAX_FAILED_SHARE * out.sent, out.describe(RATE, TAIL_S)
    # AND the new head came back with the state: the app without a redeploy, the same worker node and replica
    # (not restarted: no weights fetched again)
    assert out.serve_back_s is not None, out.describe(RATE, TAIL_S)
    assert out.replicas_after == out.replicas_before
    after = {n["id"]: n for n in c.wait_nodes(2)}
    assert after[worker_node]["alive"]

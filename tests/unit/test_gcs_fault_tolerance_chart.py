"""GCS fault tolerance in the serving chart: what each RayService asks of KubeRay when the environment turns it on
(``ray.gcs_fault_tolerance``), the heads' way to the store, and the disruption budgets either way."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from eks_inference.config import ConfigError
from eks_inference.k8s.ray_service import GCS_STORE_PORT, GCS_STORE_SECRET, GCS_STORE_SECRET_KEY, GcsFaultTolerance
from eks_inference.k8s.serving_chart import plan_targets
from tests.unit.k8s_support import GCS_STORE_HOST, IMAGES, REPOSITORY, config, crd_errors, crd_validator, render


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


@pytest.fixture(scope="module")
def prod() -> tuple[Any, list[dict[str, Any]]]:
    cfg = config("prod")
    assert cfg.ray.gcs_fault_tolerance  # the shipped prod turns it on
    targets, serving, _ = render(cfg)
    return targets, serving


@pytest.fixture(scope="module")
def dev() -> tuple[Any, list[dict[str, Any]]]:
    cfg = config("dev")
    assert not cfg.ray.gcs_fault_tolerance
    targets, serving, _ = render(cfg)
    return targets, serving


def test_prod_ray_services_keep_their_gcs_state_in_the_store_over_tls(prod) -> None:  # type: ignore[no-untyped-def]
    # GIVEN prod WHEN rendered THEN every RayService names the store over rediss:// and the password by Secret
    services = by_kind(prod[1], "RayService")
    assert services
    for rs in services.values():
        cluster = rs["spec"]["rayClusterConfig"]
        assert cluster["gcsFaultToleranceOptions"] == {
            "redisAddress": f"rediss://{GCS_STORE_HOST}:{GCS_STORE_PORT}",
            "redisPassword": {"valueFrom": {"secretKeyRef": {"name": GCS_STORE_SECRET, "key": GCS_STORE_SECRET_KEY}}}}
        # No storage namespace of ours: KubeRay's default (the RayCluster's UID) keeps the two clusters of a
        # NewCluster upgrade apart; one shared namespace would have two GCSs write the same keys.
        assert "externalStorageNamespace" not in cluster["gcsFaultToleranceOptions"]
        head_env = {e["name"]: e.get("value") for e in
                    cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
        assert head_env["RAY_REDIS_CA_CERT"] == "/etc/ssl/certs/ca-certificates.crt"
        # KubeRay refuses these when gcsFaultToleranceOptions is set (utils/validation.go, validateRayClusterSpec)
        assert not {"REDIS_PASSWORD", "RAY_REDIS_ADDRESS", "RAY_external_storage_namespace"} & set(head_env)
        assert "redis-password" not in cluster["headGroupSpec"]["rayStartParams"]


def test_prod_ray_services_still_match_the_kuberay_crd(prod) -> None:  # type: ignore[no-untyped-def]
    validator = crd_validator("ray.io_rayservices.yaml")
    if validator is None:
        pytest.skip("KubeRay CRDs not present beside the repository")
    for rs in by_kind(prod[1], "RayService").values():
        assert crd_errors(validator, rs) == []


def test_dev_has_no_gcs_fault_tolerance(dev) -> None:  # type: ignore[no-untyped-def]
    for rs in by_kind(dev[1], "RayService").values():
        assert "gcsFaultToleranceOptions" not in rs["spec"]["rayClusterConfig"]
        env = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
        assert "RAY_REDIS_CA_CERT" not in {e["name"] for e in env}
    for pol in by_kind(dev[1], "NetworkPolicy").values():
        for rule in pol["spec"].get("egress", []):
            assert {"port": GCS_STORE_PORT, "protocol": "TCP"} not in rule.get("ports", [])


def test_only_the_heads_policy_lets_pods_out_to_the_store(prod) -> None:  # type: ignore[no-untyped-def]
    # GIVEN prod WHEN rendered THEN the store's port appears in the heads' egress only, toward the store's subnets
    cfg = config("prod")
    with_store = {}
    for name, pol in by_kind(prod[1], "NetworkPolicy").items():
        for rule in pol["spec"].get("egress", []):
            if {"port": GCS_STORE_PORT, "protocol": "TCP"} in rule.get("ports", []):
                with_store[name] = (pol["spec"]["podSelector"]["matchLabels"], rule["to"])
    targets = [t.name for t in prod[0]]
    assert set(with_store) == {f"{t}-head" for t in targets}
    for selector, peers in with_store.values():
        assert selector["eks-inference/ray-role"] == "head"
        assert peers == [{"ipBlock": {"cidr": cfg.vpc_cidr}}]


def test_budgets_keep_the_last_replica_and_never_cover_a_head(prod, dev) -> None:  # type: ignore[no-untyped-def]
    for targets, manifests in (prod, dev):
        pdbs = by_kind(manifests, "PodDisruptionBudget")
        assert set(pdbs) == {f"{t.name}-workers" for t in targets}  # none selects a head
        for t in targets:
            spec = pdbs[f"{t.name}-workers"]["spec"]
            assert spec["selector"]["matchLabels"]["eks-inference/ray-role"] == "worker"
            lo = t.ray_service.workers[0].min_replicas
            assert spec == {**({"minAvailable": 1} if lo < 2 else {"maxUnavailable": 1}),
                            "selector": spec["selector"]}
    # dev's one replica may not be drained away; prod's several go one at a time
    assert {p["spec"].get("minAvailable") for p in by_kind(dev[1], "PodDisruptionBudget").values()} == {1}
    assert {p["spec"].get("maxUnavailable") for p in by_kind(prod[1], "PodDisruptionBudget").values()} == {1}


def test_fault_tolerance_without_a_store_is_refused() -> None:
    cfg = config("prod")
    with pytest.raises(ConfigError, match=r"ray\.gcs_fault_tolerance: true, but no GCS store was given"):
        plan_targets(cfg, images=IMAGES, repository_uri=REPOSITORY, region=cfg.region)
    # and a store handed to an environment that does not ask for it is not used
    dev = config("dev")
    store = GcsFaultTolerance(host=GCS_STORE_HOST, cidrs=("10.0.0.0/16",))
    targets = plan_targets(dev, images=IMAGES, repository_uri=REPOSITORY, region=dev.region, gcs_store=store)
    assert all(t.ray_service.gcs_fault_tolerance is None for t in targets)


def test_a_store_without_subnets_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"GCS store: no subnets given"):
        GcsFaultTolerance(host=GCS_STORE_HOST, cidrs=())
    assert dataclasses.replace(GcsFaultTolerance(host="h", cidrs=("10.0.0.0/24",)), port=7000).redis_address == \
        "rediss://h:7000"

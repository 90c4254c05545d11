"""The GCS store counts in what an environment costs: one line, its node type's dated price times its nodes."""

from __future__ import annotations

import pytest

from eks_inference.costs import environment_cost
from eks_inference.tables.prices import ELASTICACHE_NODES
from tests.unit.k8s_support import config


def _store_lines(cfg):  # type: ignore[no-untyped-def]
    return [line for line in environment_cost(cfg).lines if line.item.startswith("GCS store")]


def test_prod_pays_for_a_primary_and_its_replica_at_the_dated_price() -> None:
    # GIVEN prod (GCS fault tolerance on, cache.t4g.medium, one replica) WHEN priced THEN two nodes at the table's price
    cfg = config("prod")
    (line,) = _store_lines(cfg)
    price = ELASTICACHE_NODES.hourly(cfg.ray.redis_node_type, cfg.region)
    assert price is not None and line.unit_hourly == price
    assert line.counts == (2, 2, 2)
    with_store, without = environment_cost(cfg), environment_cost(config("prod", ray={"gcs_fault_tolerance": False}))
    assert with_store.total(1) == pytest.approx(without.total(1) + 2 * price)


def test_dev_without_the_store_pays_nothing_for_it() -> None:
    assert _store_lines(config("dev")) == []


def test_a_node_type_the_table_does_not_know_is_listed_unpriced_not_guessed() -> None:
    cfg = config("prod", ray={"gcs_fault_tolerance": True, "redis_node_type": "cache.r7g.large", "redis_replicas": 0})
    (line,) = _store_lines(cfg)
    assert line.unit_hourly is None and line.counts == (1, 1, 1)
    assert line in environment_cost(cfg).unpriced

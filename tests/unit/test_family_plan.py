"""``plan`` on a family target: replicas from the measured working set, on a hand-made result with known answers."""

from __future__ import annotations

from typing import Any

from eks_inference.fleet.plan import PlanInputs, family_working_set, plan, render
from eks_inference.measure.results import REPORT_FORMAT

PASSED = {"status": "passed", "summary": "PASSED"}


def family_step(rps: float, *, hit_ratio: float, cold_p50: float, warm_p50: float) -> dict[str, Any]:
    return {"step": 1, "mode": "open", "requested_rate": rps, "concurrency": None, "ok": 1000, "error_rate": 0.0,
            "behind_schedule": False, "status": "complete", "throughput_rps": rps, "inferences_per_s": rps,
            "latency_ms": {"p99": 80.0},
            "models": {"cold": round(1000 * (1 - hit_ratio)), "warm": round(1000 * hit_ratio), "hit_ratio": hit_ratio,
                       "load_rate_per_s": rps * (1 - hit_ratio), "cold_ms": {"p50": cold_p50, "p99": cold_p50 * 2},
                       "warm_ms": {"p50": warm_p50, "p99": 20.0}}}


def test_replicas_keep_up_with_the_misses_at_the_target_rate() -> None:
    # R = 1000/s, h = 0.9: 100 loads/s; a load costs 60 - 10 = 50 ms: 5 s of loading a second; at 30 % headroom each
    # replica loads 0.7 s a second: 5 / 0.7 = 7.14, so 8 replicas
    f = family_working_set(family_step(200, hit_ratio=0.9, cold_p50=60.0, warm_p50=10.0), target_rps=1000,
                           headroom=0.3)
    assert f is not None
    assert (f["hit_ratio"], f["load_ms"], f["replicas"]) == (0.9, 50.0, 8)
    assert abs(f["loads_per_s_at_target"] - 100.0) < 1e-9
    # exactly 7 replicas' worth does not round up: 1400 × 0.1 × 0.05 / 0.5 = 14
    exact = family_working_set(family_step(200, hit_ratio=0.9, cold_p50=60.0, warm_p50=10.0), target_rps=1400,
                               headroom=0.5)
    assert exact is not None and exact["replicas"] == 14
    # every request a hit: no loads to keep up with, one replica (the capacity plan sizes the rest)
    warm = family_working_set(family_step(200, hit_ratio=1.0, cold_p50=60.0, warm_p50=10.0), target_rps=1000,
                              headroom=0.3)
    assert warm is not None and warm["replicas"] == 1
    # a single model's step has no working set
    single = family_step(200, hit_ratio=0.9, cold_p50=60.0, warm_p50=10.0)
    del single["models"]
    assert family_working_set(single, target_rps=1000, headroom=0.3) is None


def test_the_plan_of_a_family_target_names_its_working_set() -> None:
    doc = {"format": REPORT_FORMAT, "format_version": 1, "slo_p99_ms": 100.0, "max_error_rate": 0.01,
           "generated_at": "2026-12-07T00:00:00+00:00", "prices": {"date": "2025-06-01"},
           "targets": [{"label": "tenants", "run_id": "r1", "region": "us-east-1",
                        "target": {"name": "tenants", "processor": "graviton", "instance_type": "c7g.xlarge",
                                   "nodes": 1, "price_as": None},
                        "priced_instance_type": "c7g.xlarge", "price_per_instance_hour": 0.5,
                        "verification": PASSED,
                        "steps": [family_step(200, hit_ratio=0.9, cold_p50=60.0, warm_p50=10.0)]}]}
    p = plan(doc, PlanInputs(target_rps=1000, slo_p99_ms=100.0, accept_wide=True), source="r.json")
    (x,) = p.planned
    assert x.family is not None and x.family["replicas"] == 8
    assert x.to_dict(1)["family"]["replicas"] == 8
    text = render(p)
    assert "family: hit ratio 90.0%, 50.0 ms a load, 100 loads/s at the target: at least 8 replicas" in text

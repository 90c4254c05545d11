"""``plan`` on a family target: replicas from the measured working set, on a hand-made result with known answers."""

from __future__ import annotations

import dataclasses
from typing import Any

from eks_inference.fleet.plan import PlanInputs, family_working_set, plan, render
from eks_inference.measure.results import REPORT_FORMAT
from eks_inference.measure.spec import Arrival, Mode, StepSpec, TargetInfo
from eks_inference.measure.stats import StepRecorder, StepStats
from eks_inference.measure.steps import ClientStep, family_split
from eks_inference.measure.working_set import hit_curve, hit_ratio_at, step_working_set

PASSED = {"status": "passed", "summary": "PASSED"}


def family_step(rps: float, *, hit_ratio: float, cold_p50: float, warm_p50: float,
                working_set: dict[str, Any] | None = None) -> dict[str, Any]:
    step = {"step": 1, "mode": "open", "requested_rate": rps, "concurrency": None, "ok": 1000, "error_rate": 0.0,
            "behind_schedule": False, "status": "complete", "throughput_rps": rps, "inferences_per_s": rps,
            "latency_ms": {"p99": 80.0},
            "models": {"cold": round(1000 * (1 - hit_ratio)), "warm": round(1000 * hit_ratio), "hit_ratio": hit_ratio,
                       "load_rate_per_s": rps * (1 - hit_ratio), "cold_ms": {"p50": cold_p50, "p99": cold_p50 * 2},
                       "warm_ms": {"p50": warm_p50, "p99": 20.0}}}
    if working_set is not None:
        step["models"]["working_set"] = working_set
    return step


def working_set(routing: str | None, *, mix: str = "uniform", members: int = 10, per_budget: int | None = 2,
                replicas: int | None = 1) -> dict[str, Any]:
    return {"mix": mix, "members": members, "routing": routing, "replicas": replicas, "memory_budget_bytes": 400,
            "held_members": per_budget, "member_bytes": 200, "members_per_budget": per_budget}


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


def family_report(step: dict[str, Any]) -> dict[str, Any]:
    return {"format": REPORT_FORMAT, "format_version": 1, "slo_p99_ms": 100.0, "max_error_rate": 0.01,
           "generated_at": "2026-12-07T00:00:00+00:00", "prices": {"date": "2025-06-01"},
           "targets": [{"label": "tenants", "run_id": "r1", "region": "us-east-1",
                        "target": {"name": "tenants", "processor": "graviton", "instance_type": "c7g.xlarge",
                                   "nodes": 1, "price_as": None},
                        "priced_instance_type": "c7g.xlarge", "price_per_instance_hour": 0.5,
                        "verification": PASSED,
                        "steps": [step]}]}


def test_the_plan_of_a_family_target_names_its_working_set() -> None:
    doc = family_report(family_step(200, hit_ratio=0.9, cold_p50=60.0, warm_p50=10.0,
                                    working_set=working_set("model-blind")))
    p = plan(doc, PlanInputs(target_rps=1000, slo_p99_ms=100.0, accept_wide=True), source="r.json")
    (x,) = p.planned
    assert x.family is not None and x.family["replicas"] == 8
    assert x.to_dict(1)["family"]["replicas"] == 8
    text = render(p)
    assert "family: hit ratio 90.0%, 50.0 ms a load, 100 loads/s at the target: at least 8 replicas" in text
    assert "ceil(R × (1 − h) × L / (1 − H)) (model-blind ingress" in text
    assert x.to_dict(1)["family"]["routing"] == "model-blind"



def test_the_hit_ratio_rises_with_the_replicas_that_hold_distinct_members() -> None:
    curve = hit_curve("zipf:1.1", 16)
    h = [hit_ratio_at(k, members_per_budget=4, curve=curve) for k in range(1, 6)]
    assert h[0] < h[1] < h[2] < h[3] and h[3] == h[4] == 1.0  # 4 × 4 hold all 16
    assert abs(h[0] - sum(1 / r ** 1.1 for r in range(1, 5)) / sum(1 / r ** 1.1 for r in range(1, 17))) < 1e-12
    assert [hit_ratio_at(k, members_per_budget=2, curve=hit_curve("uniform", 10)) for k in (1, 3, 5, 6)] == \
        [0.2, 0.6, 1.0, 1.0]
    assert hit_ratio_at(0, members_per_budget=2, curve=curve) == 0.0


def test_model_aware_routing_sizes_from_h_of_k_and_model_blind_from_the_measured_ratio() -> None:
    # uniform over 10 members, B = 2: h(k) = 0.2 k. R = 100/s, L = 60 - 10 = 50 ms, H = 0.3: a replica may load
    # 0.7 s a second; k = 1: 100 × 0.8 × 0.05 = 4 s; k = 2: 3 / 2 = 1.5; k = 3: 2 / 3 = 0.67 <= 0.7, so 3
    aware = family_working_set(family_step(50, hit_ratio=0.2, cold_p50=60.0, warm_p50=10.0,
                                           working_set=working_set("model-aware")), target_rps=100, headroom=0.3)
    assert aware is not None
    assert (aware["routing"], aware["replicas"], aware["members_per_budget"]) == ("model-aware", 3, 2)
    assert abs(aware["hit_ratio_at_replicas"] - 0.6) < 1e-12 and abs(aware["loads_per_s_at_target"] - 40) < 1e-9
    assert aware["hit_ratio_model_at_measured"] == 0.2  # the model's h(1) beside the measured 20 % on 1 replica
    assert aware["formula"] == "least k with R × (1 − h(k)) × L / k <= 1 − H"
    # the same step behind the model-blind ingress: h stays 0.2 per replica, ceil(100 × 0.8 × 0.05 / 0.7) = 6
    blind = family_working_set(family_step(50, hit_ratio=0.2, cold_p50=60.0, warm_p50=10.0,
                                           working_set=working_set("model-blind")), target_rps=100, headroom=0.3)
    assert blind is not None and (blind["routing"], blind["replicas"]) == ("model-blind", 6)
    # once the replicas hold every member nothing is loaded: never more replicas than N / B
    whole = family_working_set(family_step(50, hit_ratio=0.2, cold_p50=60.0, warm_p50=10.0,
                                           working_set=working_set("model-aware")), target_rps=1e6, headroom=0.3)
    assert whole is not None and whole["replicas"] == 5 and whole["hit_ratio_at_replicas"] == 1.0
    # a Zipf mix's hot members are few: model-aware needs fewer replicas than model-blind at the same measured h
    zipf = working_set("model-aware", mix="zipf:1.1", members=16, per_budget=4)
    step = family_step(50, hit_ratio=0.65, cold_p50=60.0, warm_p50=10.0, working_set=zipf)
    za = family_working_set(step, target_rps=100, headroom=0.3)
    zb = family_working_set(family_step(50, hit_ratio=0.65, cold_p50=60.0, warm_p50=10.0,
                                        working_set={**zipf, "routing": "model-blind"}), target_rps=100, headroom=0.3)
    assert za is not None and zb is not None and za["replicas"] == 2 < zb["replicas"] == 3


def test_a_report_lacking_the_working_set_says_which_formula_it_used_and_why() -> None:
    old = family_working_set(family_step(200, hit_ratio=0.9, cold_p50=60.0, warm_p50=10.0), target_rps=1000,
                             headroom=0.3)
    assert old is not None and old["replicas"] == 8 and old["routing"] is None
    assert old["formula"] == "ceil(R × (1 − h) × L / (1 − H))"
    assert "recorded no routing" in old["basis"] and "upper bound" in old["basis"]
    no_b = family_working_set(family_step(200, hit_ratio=0.9, cold_p50=60.0, warm_p50=10.0,
                                          working_set=working_set("model-aware", per_budget=None)),
                              target_rps=1000, headroom=0.3)
    assert no_b is not None and no_b["replicas"] == 8 and no_b["formula"].startswith("ceil(")
    assert "model-aware routing, but the step recorded no mix or members per budget" in no_b["basis"]
    text = render(plan(family_report(family_step(200, hit_ratio=0.9, cold_p50=60.0, warm_p50=10.0)),
                       PlanInputs(target_rps=1000, slo_p99_ms=100.0, accept_wide=True), source="r.json"))
    assert "the step recorded no routing" in text


def test_the_plan_of_a_model_aware_family_shows_h_of_k_and_the_routing_in_json() -> None:
    doc = family_report(family_step(50, hit_ratio=0.2, cold_p50=60.0, warm_p50=10.0,
                                    working_set=working_set("model-aware")))
    p = plan(doc, PlanInputs(target_rps=100, slo_p99_ms=100.0, accept_wide=True), source="r.json")
    fam = p.to_dict()["targets"][0]["family"]
    assert (fam["routing"], fam["replicas"], fam["measured_replicas"]) == ("model-aware", 3, 1)
    text = " ".join(render(p).split())
    assert "family: h(k) 60.0% at 3 replicas; measured 20.0% on 1, the model gives 20.0% there" in text
    assert "at least 3 replicas keep up with the misses, least k with R × (1 − h(k)) × L / k <= 1 − H" in text
    assert "model-aware routing: k replicas hold k × 2 distinct members" in text


def test_a_family_step_records_its_working_set_from_the_targets_info() -> None:
    info = {"routing": "model-aware", "replicas": {"running": 2}, "memory_budget_bytes": 1000,
            "held": [{"model_id": "m000", "bytes": 300}, {"model_id": "m001", "bytes": 200}]}
    ws = step_working_set(info, mix="zipf:1.1", members=16)
    assert ws == {"mix": "zipf:1.1", "members": 16, "routing": "model-aware", "replicas": 2,
                  "memory_budget_bytes": 1000, "held_members": 2, "member_bytes": 250, "members_per_budget": 4}
    # a target that could not be read, or one from before /info named its routing: what is missing is None
    assert step_working_set(None, mix="uniform", members=3) == {
        "mix": "uniform", "members": 3, "routing": None, "replicas": None, "memory_budget_bytes": None,
        "held_members": None, "member_bytes": None, "members_per_budget": None}
    # the step's models block carries the record of the client that read /info, through the result file
    rec = StepRecorder(window_start=0.0)
    for i in range(4):
        rec.record_ok(0.05, 0.5 + i * 0.1, cold=i == 0)
    stats = dataclasses.replace(rec.finish(window_s=1.0), working_set=ws)
    assert StepStats.from_dict(stats.to_dict()) == stats
    spec = StepSpec(index=0, mode=Mode.OPEN, arrival=Arrival.CONSTANT, rate=4.0, concurrency=None, client_rate=2.0,
                    client_concurrency=None, duration_s=1.0, requests=None, warmup_s=0.0)

    def client(index: int, st: StepStats) -> ClientStep:
        return ClientStep(source=f"c{index}", run_id="r", client_index=index, clients=2,
                          target=TargetInfo(name="tenants", url="http://t/tenants"), spec=spec, stats=st)

    unread = dataclasses.replace(stats, working_set=step_working_set(None, mix="zipf:1.1", members=16))
    models = family_split([client(1, unread), client(0, stats)], 8.0)
    assert models is not None and models["working_set"] == ws and models["hit_ratio"] == 0.75

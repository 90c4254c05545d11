"""``eks-inference plan``: fleet arithmetic on hand-made reports, the refusals, and docs/load-testing.md's example."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from eks_inference.cli import main
from eks_inference.config import ConfigError
from eks_inference.fleet.plan import PlanInputs, fixed_costs, nodes_for, plan, render
from eks_inference.measure.results import REPORT_FORMAT

ROOT = Path(__file__).resolve().parents[2]
PASSED = {"status": "passed", "summary": "PASSED"}


def step(i: int, rps: float, p99: float, *, inputs: int = 1, errors: float = 0.0, behind: bool = False) -> dict:
    return {"step": i, "mode": "open", "requested_rate": rps, "concurrency": None, "ok": 1000, "error_rate": errors,
            "behind_schedule": behind, "status": "complete", "throughput_rps": rps, "inferences_per_s": rps * inputs,
            "latency_ms": {"p99": p99}}


def target(name: str, steps: list[dict], *, price: float | None = 0.5, itype: str | None = "c7g.xlarge",
           nodes: int = 1, verification: dict | None = PASSED, price_as: str | None = None,
           region: str = "us-east-1") -> dict:
    return {"label": name, "run_id": "r1", "target": {"name": name, "processor": "graviton", "instance_type": itype,
                                                      "nodes": nodes, "price_as": price_as},
            "region": region, "priced_instance_type": price_as or itype, "price_per_instance_hour": price,
            "verification": verification, "steps": steps}


def report(*targets: dict, slo: float = 100.0) -> dict:
    return {"format": REPORT_FORMAT, "format_version": 1, "slo_p99_ms": slo, "max_error_rate": 0.01,
            "generated_at": "2026-11-29T00:00:00+00:00", "prices": {"date": "2025-06-01"}, "targets": list(targets)}


def inputs(r: float, **kw: Any) -> PlanInputs:
    """These hand-made reports carry no intervals, as reports did before them: planned only when accepted."""
    kw.setdefault("accept_wide", True)
    return PlanInputs(target_rps=r, slo_p99_ms=kw.pop("slo", 100.0), **kw)


def test_zones_carry_the_load_after_losing_one() -> None:
    # C=100, H=0.3, Z=3: two zones at 70 % carry 140 per node-pair; 1000 rps → ceil(1000/140)=8 per zone
    assert nodes_for(1000, 100, headroom=0.3, azs=3) == (8, 24)
    assert nodes_for(1000, 100, headroom=0.0, azs=2) == (10, 20)  # one surviving zone, no headroom: 10 nodes there
    assert nodes_for(1001, 100, headroom=0.0, azs=2) == (11, 22)
    assert nodes_for(1, 1000, headroom=0.3, azs=3) == (1, 3)  # never fewer than one node per zone


@pytest.mark.parametrize(("r", "c", "h", "z", "per_zone"), [
    (140, 100, 0.3, 3, 1),     # exactly 100 × 0.7 × 2 = 140
    (2.1, 3, 0.3, 2, 1),       # 3 × 0.7 = 2.0999999999999996 in floats, which would round 2.1 up to 2 nodes
    (420, 100, 0.3, 4, 2),     # 100 × 0.7 × 3 = 210, twice
    (0.7 * 3 * 1000, 1000, 0.3, 2, 3),
    (9000, 1000, 0.1, 2, 10),  # 1000 × 0.9 = 900 per surviving zone's node, exactly 10 of them
])
def test_an_exact_multiple_does_not_round_up(r: float, c: float, h: float, z: int, per_zone: int) -> None:
    assert nodes_for(r, c, headroom=h, azs=z) == (per_zone, per_zone * z)


def test_plan_ranks_by_monthly_cost_and_says_what_each_figure_rests_on() -> None:
    doc = report(
        # 400 rps within the SLO on 2 nodes: 200 per node
        target("graviton", [step(0, 200, 30), step(1, 400, 80), step(2, 800, 900)], price=0.145, nodes=2),
        # 1500 rps on one node, but dearer
        target("inferentia", [step(0, 1500, 40)], price=0.7582, itype="inf2.xlarge"),
    )
    p = plan(doc, inputs(10_000), source="r.json")
    assert [x.label for x in p.planned] == ["graviton", "inferentia"] or [x.label for x in p.planned] == [
        "inferentia", "graviton"]
    g = next(x for x in p.planned if x.label == "graviton")
    assert g.per_node_rps == 200 and g.measured["step"] == 1
    assert (g.nodes_per_zone, g.nodes) == (36, 108)  # ceil(10000 / (200 × 0.7 × 2)) = ceil(35.7)
    assert g.monthly_usd == pytest.approx(108 * 0.145 * 730)
    i = next(x for x in p.planned if x.label == "inferentia")
    assert (i.nodes_per_zone, i.nodes) == (5, 15)  # ceil(10000 / 2100) = 5
    assert i.monthly_usd == pytest.approx(15 * 0.7582 * 730)
    assert [x.monthly_usd for x in p.planned] == sorted(x.monthly_usd for x in p.planned)
    d = p.to_dict()
    assert [t["target"] for t in d["targets"]] == [x.label for x in p.planned]
    first = d["targets"][0]
    assert {"target", "instance_type", "nodes", "monthly_usd"} <= set(first) and first["rank"] == 1
    assert d["targets"][[t["target"] for t in d["targets"]].index("graviton")]["measured"] == {
        "step": 1, "mode": "open", "requested_rate": 400, "concurrency": None, "throughput_rps": 400,
        "inferences_per_s": 400, "p99_ms": 80, "nodes": 2}
    text = render(p)
    assert ("graviton, run r1: the best SLO-meeting step (no interval: accepted with --accept-wide): step 1 (400/s\n"
            "     offered); at that step 400.0 req/s served at p99 80.0 ms on 2 nodes") in text
    assert "108 (3 × 36)" in text


def test_fixed_costs_are_named_apart() -> None:
    f = fixed_costs("us-east-1", inputs(1))
    assert f.control_plane == pytest.approx(0.10 * 730)
    assert (f.nat_gateways, f.nat_each) == (3, pytest.approx(0.045 * 730))
    assert (f.system_nodes, f.system_type, f.system_each) == (3, "m7i.large", pytest.approx(0.1008 * 730))
    assert f.total == pytest.approx(73 + 3 * 32.85 + 3 * 0.1008 * 730)
    assert "EKS control plane $73.00; 3 NAT gateways × $32.85; system node group 3 × m7i.large × $73.58" in f.text()
    two = fixed_costs("us-east-1", inputs(1, azs=2, system_nodes=1, system_instance_type="m7i.xlarge"))
    assert (two.nat_gateways, two.system_nodes, two.system_each) == (2, 1, pytest.approx(0.2016 * 730))
    assert fixed_costs("ap-south-2", inputs(1)).total is None  # no NAT price there: n/a, not a guess


def test_refusals_say_why_and_only_an_empty_plan_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = target("good", [step(0, 100, 50)])
    doc = report(
        good,
        target("no-price", [step(0, 100, 50)], price=None, itype="x9.huge"),
        target("no-type", [step(0, 100, 50)], price=None, itype=None),
        target("too-slow", [step(0, 100, 500)]),
        target("errors", [step(0, 100, 50, errors=0.05)]),
        target("unverified", [step(0, 100, 50)], verification=None),
        target("failed", [step(0, 100, 50)], verification={"status": "failed", "worst": {"text": "empty (''): "
                                                                                                 "cosine 0.2"}}),
    )
    p = plan(doc, inputs(1000), source="r.json")
    assert [x.label for x in p.planned] == ["good"]
    why = {r.label: r.reason for r in p.refused}
    assert why["no-price"].startswith("no price for x9.huge in us-east-1")
    assert why["no-type"].startswith("no instance type to price")
    assert why["too-slow"].startswith("no step met the SLO (p99 <= 100 ms")
    assert why["errors"].startswith("no step met the SLO")
    assert why["unverified"].startswith("not verified: measure it with `loadtest run --verify`")
    assert why["failed"] == ("verification FAILED (worst input: empty (''): cosine 0.2); fix the target and "
                             "measure again")
    assert "Refused:\n  no-price: no price for x9.huge" in render(p)

    f = tmp_path / "report.json"
    f.write_text(json.dumps(doc))
    assert main(["plan", str(tmp_path), "--target-rps", "1000", "--json", "--accept-wide"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [t["target"] for t in out["targets"]] == ["good"] and len(out["refused"]) == 6
    f.write_text(json.dumps(report(*doc["targets"][1:])))
    assert main(["plan", str(f), "--target-rps", "1000", "--accept-wide"]) == 1
    captured = capsys.readouterr()
    assert "No target can be planned." in captured.out and "no target of the report can be planned" in captured.err


def test_another_slo_repicks_the_best_step_from_the_report_steps() -> None:
    doc = report(target("t", [step(0, 100, 20), step(1, 200, 60), step(2, 300, 150)]), slo=100)
    assert plan(doc, inputs(1000, slo=100), source="r").planned[0].per_node_rps == 200
    assert plan(doc, inputs(1000, slo=200), source="r").planned[0].per_node_rps == 300
    assert plan(doc, inputs(1000, slo=50), source="r").planned[0].per_node_rps == 100
    refused = plan(doc, inputs(1000, slo=10), source="r")
    assert not refused.planned and refused.refused[0].reason.startswith("no step met the SLO (p99 <= 10 ms")


def test_bad_inputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for kw, match in (({"azs": 1}, "--azs: 1 cannot lose a zone"), ({"headroom": 1.0}, r"--headroom: 1 is outside"),
                      ({"headroom": -0.1}, "--headroom"), ({"target_rps": 0.0}, "--target-rps: 0"),
                      ({"slo_p99_ms": -1.0}, "--slo-p99-ms")):
        args = {"target_rps": 10.0, "slo_p99_ms": 100.0, **kw}
        with pytest.raises(ConfigError, match=match):
            PlanInputs(**args)
    assert main(["plan", str(tmp_path), "--target-rps", "10"]) == 2
    assert "is not report.json or a directory holding one" in capsys.readouterr().err
    (tmp_path / "report.json").write_text(json.dumps({"format": "something else"}))
    assert main(["plan", str(tmp_path), "--target-rps", "10"]) == 2
    assert "is not a price-performance report" in capsys.readouterr().err
    assert main(["plan", str(tmp_path), "--target-rps", "10", "--azs", "1"]) == 2


README_BLOCK = re.compile(r"<!-- plan-example: (?P<cmd>eks-inference plan [^>]+?) -->\n```text\n(?P<out>.*?)```",
                          re.DOTALL)


def test_the_readme_example_is_the_commands_real_output(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The worked example in docs/load-testing.md is generated by the command on the committed example report;
    regenerate it (run the command from the project root and paste its output) when the report or the plan changes."""
    m = README_BLOCK.search((ROOT / "docs" / "load-testing.md").read_text())
    assert m is not None, "docs/load-testing.md has no <!-- plan-example: eks-inference plan ... --> block"
    monkeypatch.chdir(ROOT)
    argv = m["cmd"].split()[1:]
    assert argv[1] == "docs/example-report/report.json"
    assert main(argv) == 0
    assert capsys.readouterr().out == m["out"]


def istep(i: int, rps: float, p99: float, lo: float, hi: float | None) -> dict:
    """A step of a report with intervals: the p99's 95 % bounds beside it."""
    s = step(i, rps, p99)
    s["latency_ms"].update({"p99_lo": lo, "p99_hi": hi})
    s.update({"error_rate_lo": 0.0, "error_rate_hi": 0.003, "contended": False})
    return s


def test_the_plan_rests_on_the_lower_bound_and_prints_both() -> None:
    # 400 passes with confidence, 440 only at its estimate (its interval straddles 100 ms), 480 fails.
    doc = report(target("graviton", [istep(0, 400, 60, 55, 70), istep(1, 440, 95, 85, 110),
                                     istep(2, 480, 180, 150, 220)], price=0.145, nodes=2))
    p = plan(doc, inputs(10_000, accept_wide=False), source="r.json")
    (g,) = p.planned
    assert g.capacity is not None and (g.capacity["rps_lo"], g.capacity["rps"], g.capacity["rps_hi"]) == (
        400, 440, 480)
    assert g.per_node_rps == 200 and g.per_node_rps_hi == 240  # the lower bound plans, the upper is shown
    assert (g.nodes, g.nodes_at_hi) == (108, 90)  # ceil(10000 / (200 × 1.4)) = 36 and ceil(10000 / 336) = 30
    text = render(p)
    assert "sized from the\n   lower bound of each capacity interval (95 %)" in text
    assert "240.0/node: 90 nodes, $9,526" in text
    assert "capacity 440 req/s (95 % interval 400 to 480, width 18%); sized from 400" in text
    assert p.to_dict()["targets"][0]["at_upper_bound"]["nodes"] == 90


def test_a_wide_interval_is_refused_with_how_to_narrow_it_unless_accepted() -> None:
    doc = report(target("wide", [istep(0, 100, 60, 55, 70), istep(1, 200, 95, 80, 120),
                                 istep(2, 400, 300, 250, 400)]))
    (refused,) = plan(doc, inputs(1000, accept_wide=False), source="r.json").refused
    assert refused.reason.startswith("capacity interval 100 to 400 req/s is 150% of its estimate 200, wider than 25%")
    assert "--repeats 5" in refused.reason and "--accept-wide" in refused.reason
    (w,) = plan(doc, inputs(1000, accept_wide=True), source="r.json").planned
    assert w.per_node_rps == 100  # accepted, still from the lower bound
    assert plan(doc, inputs(1000, accept_wide=False, max_width=2.0), source="r.json").planned


def test_no_confident_pass_and_no_intervals_are_refused() -> None:
    unsure = report(target("unsure", [istep(0, 100, 95, 80, 120), istep(1, 200, 300, 250, 400)]))
    (r,) = plan(unsure, inputs(1000, accept_wide=True), source="r.json").refused
    assert r.reason.startswith("no rate was shown to meet p99 <= 100 ms with 95 % confidence")
    old = report(target("old", [step(0, 100, 50)]))
    (r,) = plan(old, inputs(1000, accept_wide=False), source="r.json").refused
    assert r.reason.startswith("the report carries no intervals") and "--repeats 3" in r.reason
    open_top = report(target("open", [istep(0, 100, 50, 45, 55), istep(1, 200, 60, 55, 70)]))
    (r,) = plan(open_top, inputs(1000, accept_wide=False), source="r.json").refused
    assert "has no upper bound" in r.reason

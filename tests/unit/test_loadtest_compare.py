"""``loadtest compare``'s judgement: a figure moves only when both runs' intervals part and the change is real."""

from __future__ import annotations

from typing import Any

import pytest

from eks_inference.analysis import compare
from eks_inference.analysis.compare import Estimate


def E(value: float | None, lo: float | None, hi: float | None, *, open_above: bool = False) -> Estimate:
    return Estimate(value=value, lo=lo, hi=hi, open_above=open_above)


@pytest.mark.parametrize(("base", "new", "higher", "verdict"), [
    (E(20, 18, 23), E(26, 24, 29), False, "worse"),       # p99 up 30 %, intervals apart
    (E(20, 18, 23), E(21, 19, 24), False, "same"),        # overlap
    (E(26, 24, 29), E(20, 18, 23), False, "better"),
    (E(20, 18, 23), E(20.5, 23.5, 25), False, "same"),    # apart but within the 10 % floor
    (E(20, 18, None), E(80, 70, 90), False, "same"),      # BASE's p99 has no upper bound: cannot be shown worse
    (E(170, 170, None, open_above=True), E(100, 100, 170), True, "worse"),   # capacity bracket: NEW below 170
    (E(170, 170, None, open_above=True), E(170, 170, None, open_above=True), True, "same"),
    (E(100, 100, 170), E(170, 170, None, open_above=True), True, "better"),
    (E(None, None, 170), E(None, None, 100), True, "same"),  # no lower end on either side: they cannot part
    (E(None, None, None), E(5, 4, 6), False, "n/a"),
])
def test_judge(base: Estimate, new: Estimate, higher: bool, verdict: str) -> None:
    got, why, _ = compare.judge(base, new, higher_is_better=higher, min_change=0.10)
    assert got == verdict, why


def _step(rate: float, p99: float, lo: float | None, hi: float | None, *, met: bool = True,
          contended: bool = False, ips: float | None = None) -> dict[str, Any]:
    return {"mode": "open", "requested_rate": rate, "slo_met": met, "contended": contended,
            "behind_schedule": False, "status": "complete",
            "latency_ms": {"p99": p99, "p99_lo": lo, "p99_hi": hi, "p50": p99 / 2, "p50_lo": (lo or p99) / 2.2,
                           "p50_hi": (hi or p99) / 1.8},
            "inferences_per_s": ips or rate, "inferences_per_s_lo": (ips or rate) * 0.95,
            "inferences_per_s_hi": (ips or rate) * 1.05}


def _doc(name: str, steps: list[dict[str, Any]], *, hourly: float | None = None) -> dict[str, Any]:
    best = max((s for s in steps if s["slo_met"]), key=lambda s: s["inferences_per_s"], default=None)
    usd = hourly / (best["inferences_per_s"] * 3600) * 1e6 if hourly and best else None
    return {"format": "eks-inference.loadtest.report", "slo_p99_ms": 100.0, "targets": [
        {"target": {"name": name}, "run_id": "r", "steps": steps, "best": best, "hourly_usd": hourly,
         "usd_per_million_inferences": usd}]}


def test_a_slower_server_is_a_regression_on_every_figure() -> None:
    base = _doc("stub", [_step(100, 8, 7, 9), _step(170, 12, 11, 14)], hourly=1.0)
    new = _doc("stub", [_step(100, 10, 9, 11), _step(170, 600, 580, 620, met=False)], hourly=1.0)
    (row,), notes = compare.compare_documents(base, new)
    assert row.verdict == "regression" and notes == []
    by = {f.name: f for f in row.figures}
    assert by["capacity_rps"].verdict == "worse"          # [170, ∞) → [100, 170)
    assert by["p99_ms"].label == "p99 at 170 req/s" and by["p99_ms"].verdict == "worse"
    assert by["usd_per_million"].verdict == "worse"       # best step at 100 instead of 170 inferences/s


def test_the_same_figures_are_the_same_and_contention_is_named() -> None:
    base = _doc("stub", [_step(100, 8, 7, 9), _step(170, 12, 11, 14, contended=True)])
    new = _doc("stub", [_step(100, 8.2, 7.1, 9.3), _step(170, 12.5, 11, 15)])
    (row,), _ = compare.compare_documents(base, new)
    assert row.verdict == "same"
    by = {f.name: f for f in row.figures}
    assert by["usd_per_million"].verdict == "n/a"  # not priced
    # The highest common rate BASE met the SLO at without contention in either run is preferred.
    assert by["p99_ms"].label == "p99 at 100 req/s"


def test_the_reports_capacity_block_is_used_when_there() -> None:
    base = _doc("stub", [_step(100, 8, 7, 9)])
    new = _doc("stub", [_step(100, 8, 7, 9)])
    base["targets"][0]["capacity"] = {"rps": 180.0, "rps_lo": 170.0, "rps_hi": 200.0, "excluded": []}
    new["targets"][0]["capacity"] = {"rps": 120.0, "rps_lo": 100.0, "rps_hi": 130.0, "excluded": []}
    (row,), _ = compare.compare_documents(base, new)
    cap = next(f for f in row.figures if f.name == "capacity_rps")
    assert cap.verdict == "worse" and cap.change == pytest.approx(-1 / 3)


def test_targets_on_one_side_and_several_runs() -> None:
    base = _doc("a", [_step(100, 8, 7, 9)])
    new = _doc("b", [_step(100, 8, 7, 9)])
    rows, notes = compare.compare_documents(base, new)
    assert rows == [] and notes == ["target 'a' only in BASE", "target 'b' only in NEW"]
    twice = _doc("a", [_step(100, 8, 7, 9)])
    twice["targets"].append({**twice["targets"][0], "run_id": "r2"})
    with pytest.raises(ValueError, match="BASE: target 'a' has several runs"):
        compare.compare_documents(twice, base)


def test_a_contended_figure_needs_a_larger_move() -> None:
    """A drift a contended host produces between two runs of one server is not a regression; a collapse is."""
    base = _doc("stub", [_step(170, 56.1, 51.6, 62.1, contended=True)])
    drift = _doc("stub", [_step(170, 72.5, 69.9, 89.7, contended=True)])
    (row,), _ = compare.compare_documents(base, drift)
    p99 = next(f for f in row.figures if f.name == "p99_ms")
    assert p99.verdict == "same" and f"within ±{compare.CONTENDED_MIN_CHANGE:.0%}" in p99.why
    assert "contended host" in p99.why and row.verdict == "same"
    collapse = _doc("stub", [_step(170, 646.7, 641.5, 650.2, met=False)])
    (row,), _ = compare.compare_documents(base, collapse)
    assert row.verdict == "regression"


def test_worse_only_as_a_contended_new_run_measured_it_is_no_verdict() -> None:
    """Two runs of one server, NEW measured while another program crowded the host (p99 and p50 both up 2.6x,
    figures from a hogged two-core machine): not a regression, and the figure says why."""
    def doc(p50: tuple[float, float, float], p99: tuple[float, float, float], contended: bool) -> dict[str, Any]:
        step = _step(4, *p99, contended=contended)
        step["latency_ms"].update(p50=p50[0], p50_lo=p50[1], p50_hi=p50[2])
        return _doc("local", [step])

    base = doc((4012.0, 3547.1, 4780.0), (4951.7, 4800.5, 5100.0), contended=False)
    hogged = doc((11493.4, 10862.6, 12845.1), (13037.4, 12935.2, 13500.0), contended=True)
    (row,), _ = compare.compare_documents(base, hogged)
    by = {f.name: f for f in row.figures}
    assert row.verdict != "regression"
    assert by["p50_ms"].verdict == "n/a" and "measure NEW again on a quieter machine" in by["p50_ms"].why
    # the same slowdown measured cleanly is one
    (row,), _ = compare.compare_documents(base, doc((11493.4, 10862.6, 12845.1), (13037.4, 12935.2, 13500.0),
                                                    contended=False))
    assert row.verdict == "regression"


def test_the_median_catches_a_slower_forward_where_the_p99_has_no_upper_bound() -> None:
    """Figures measured against the stub server (20 ms forwards, then 26 ms) at 30 req/s, 180 requests a step."""
    def doc(p50: tuple[float, float, float], p99: tuple[float, float | None]) -> dict[str, Any]:
        step = _step(30, p99[0], p99[1], None)
        step["latency_ms"].update(p50=p50[0], p50_lo=p50[1], p50_hi=p50[2])
        return _doc("stub", [step])

    base = doc((24.2, 23.568, 25.279), (70.3, 54.656))
    again = doc((23.0, 22.704, 23.903), (36.6, 33.696))
    slower = doc((30.7, 30.24, 31.727), (131.1, 108.48))
    (same,), _ = compare.compare_documents(base, again)
    (slow,), _ = compare.compare_documents(base, slower)
    assert same.verdict == "same" and slow.verdict == "regression"
    by = {f.name: f for f in slow.figures}
    assert by["p99_ms"].verdict == "same" and by["p50_ms"].verdict == "worse"

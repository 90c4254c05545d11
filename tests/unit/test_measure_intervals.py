"""The 95 % intervals against exact answers: known quantiles of known distributions, simulated many times (seeded),
must be covered in about 95 % of the runs; repeats combine, disagree and drop contended measurements as stated."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from eks_inference.measure.capacity import capacity_at_slo
from eks_inference.measure.intervals import (
    batch_rates,
    mean_interval,
    percentile_bounds_us,
    quantile_ranks,
    t975,
    wilson,
)
from eks_inference.measure.repeats import judge, summarize_repeats
from eks_inference.measure.spec import Arrival, Mode, StepSpec, TargetInfo
from eks_inference.measure.stats import StepRecorder, new_histogram
from eks_inference.measure.steps import ClientStep, summarize

RUNS = 2000
T0 = 1_800_000_000.0


def test_binomial_ranks_match_the_published_table() -> None:
    # Median of 100 samples: the 40th and 61st order statistics (Conover, Practical Nonparametric Statistics).
    assert quantile_ranks(100, 0.5) == (40, 61)
    # A p99 from 200 samples has no upper bound (there is no 201st sample); from 1,000 it does.
    assert quantile_ranks(200, 0.99)[1] is None
    j, k = quantile_ranks(1000, 0.99)
    assert j is not None and k is not None and j < 990 < k <= 1000
    # The normal approximation used past the exact range agrees with the exact ranks within one.
    import eks_inference.measure.intervals as iv
    exact = quantile_ranks(5000, 0.99)
    old = iv.EXACT_BINOMIAL_MAX_N
    iv.EXACT_BINOMIAL_MAX_N = 10
    try:
        approx = quantile_ranks(5000, 0.99)
    finally:
        iv.EXACT_BINOMIAL_MAX_N = old
    assert all(abs(a - b) <= 1 for a, b in zip(exact, approx, strict=True))  # type: ignore[operator]


@pytest.mark.parametrize("n, q", [(200, 0.5), (200, 0.9), (1000, 0.99), (3000, 0.95)])
def test_order_statistic_interval_covers_the_true_quantile_95_percent_of_the_time(n: int, q: float) -> None:
    """Lognormal latencies (a heavy right tail) with a known quantile: exp(mu + sigma * z_q)."""
    rng = np.random.default_rng(17)
    mu, sigma = math.log(40.0), 0.6
    from statistics import NormalDist
    truth = math.exp(mu + sigma * NormalDist().inv_cdf(q))
    j, k = quantile_ranks(n, q)
    assert j is not None and k is not None
    samples = np.sort(rng.lognormal(mu, sigma, size=(RUNS, n)), axis=1)
    covered = np.mean((samples[:, j - 1] <= truth) & (samples[:, k - 1] >= truth))
    # Exact binomial ranks guarantee at least 95 %; discreteness makes them a little conservative.
    assert 0.945 <= covered <= 0.985, covered


def test_interval_read_from_the_hdr_histogram_still_covers() -> None:
    """The same interval read off the merged HDR histogram (bucket edges only widen it)."""
    rng = np.random.default_rng(5)
    n, q, scale_us = 1000, 0.99, 20_000.0
    truth = -scale_us * math.log(1 - q)  # exponential latencies, mean 20 ms
    hits = 0
    runs = 400
    for _ in range(runs):
        hist = new_histogram()
        values = rng.exponential(scale_us, size=n).astype(int) + 1
        for v in values:
            hist.record_value(int(v))
        lo, hi = percentile_bounds_us(hist, {"p99": 99.0}, max_us=int(values.max()))["p99"]
        assert lo is not None and hi is not None
        hits += lo <= truth <= hi
    assert 0.93 <= hits / runs <= 0.995


def test_wilson_interval_coverage_and_zero_errors() -> None:
    rng = np.random.default_rng(3)
    n, p = 500, 0.02
    ks = rng.binomial(n, p, size=RUNS)
    cover = np.mean([lo <= p <= hi for lo, hi in (wilson(int(k), n) for k in ks)])  # type: ignore[operator]
    assert 0.93 <= cover <= 0.97
    lo, hi = wilson(0, 1000)
    assert lo == 0.0 and hi is not None and 0.003 < hi < 0.004  # ~ 3.84 / 1003.84


def test_t_interval_of_the_mean_covers_95_percent() -> None:
    assert t975(1) == 12.706 and t975(30) == 2.042 and 1.96 < t975(200) < 1.975
    rng = random.Random(11)
    hits = 0
    for _ in range(RUNS):
        xs = [rng.gauss(100.0, 8.0) for _ in range(5)]
        lo, hi = mean_interval(xs)
        assert lo is not None and hi is not None
        hits += lo <= 100.0 <= hi
    assert 0.93 <= hits / RUNS <= 0.97


def test_batch_rates_cut_whole_batches() -> None:
    assert batch_rates([10, 12, 9, 11, 30]) == [11.0, 10.0]
    assert mean_interval([5.0]) == (None, None)


# -- repeats ------------------------------------------------------------------------------------------------------

def _step(*, rate: float = 50.0, index: int = 0, repeat: int = 0, scale_s: float = 0.02, seed: int = 0,
          seconds: int = 20, contended: bool = False) -> ClientStep:
    rng = random.Random(seed)
    start = T0 + 100 * (index * 10 + repeat)
    rec = StepRecorder(window_start=start)
    n = int(rate * seconds)
    for k in range(n):
        rec.record_ok(rng.expovariate(1 / scale_s), start + (k + 0.5) / rate)
    spec = StepSpec(index=index, mode=Mode.OPEN, arrival=Arrival.CONSTANT, rate=rate, concurrency=None,
                    client_rate=rate, client_concurrency=None, duration_s=float(seconds), requests=None,
                    warmup_s=0, repeat=repeat)
    client = {"host": {"host_steal": 0.5}} if contended else {"host": {"host_steal": 0.0}}
    st = ClientStep(source="x.json", run_id="r", client_index=0, clients=1,
                    target=TargetInfo(name="t", url="http://h/t"), spec=spec, stats=rec.finish(window_s=seconds),
                    client=client)
    return st


def test_one_measurement_carries_bounds_around_its_estimates() -> None:
    s = summarize([_step()])
    lat = s["latency_ms"]
    for k in ("p50", "p90", "p99"):
        assert lat[f"{k}_lo"] <= lat[k] <= lat[f"{k}_hi"]
    assert s["throughput_rps_lo"] <= s["throughput_rps"] <= s["throughput_rps_hi"]
    assert s["error_rate_lo"] == 0.0 and s["error_rate_hi"] > 0
    assert lat["p999_hi"] is None  # 1,000 samples cannot bound a p99.9 from above


def test_repeats_pool_and_hull_and_agree_when_drawn_alike() -> None:
    a, b = _step(repeat=0, seed=1), _step(repeat=1, seed=2)
    s = summarize_repeats([[a], [b]])
    assert s["repeats"] == 2 and s["ok"] == 2000 and not s["unstable"]
    one = [summarize([a]), summarize([b])]
    for k in ("p90", "p99"):
        lat = s["latency_ms"]
        assert lat[f"{k}_lo"] <= min(x["latency_ms"][k] for x in one)
        assert lat[f"{k}_hi"] >= max(x["latency_ms"][k] for x in one)
    assert [r["repeat"] for r in s["repeat_values"]] == [0, 1]


def test_repeats_that_disagree_are_unstable() -> None:
    s = summarize_repeats([[_step(repeat=0, seed=1)], [_step(repeat=1, seed=2, scale_s=0.06)]])
    assert s["unstable"] and "no common value" in s["unstable_reason"]


def test_a_contended_repeat_is_left_out_and_said_so() -> None:
    quiet = _step(repeat=0, seed=1)
    busy = _step(repeat=1, seed=2, scale_s=0.2, contended=True)
    s = summarize_repeats([[quiet], [busy]])
    if not summarize([busy]).get("contended"):
        pytest.skip("the contention flags did not judge this synthetic host record contended")
    assert s["repeats"] == 1 and s["repeats_excluded"][0]["repeat"] == 1 and not s["contended"]
    assert s["latency_ms"]["p99"] == summarize([quiet])["latency_ms"]["p99"]


# -- the SLO with confidence, and capacity -------------------------------------------------------------------------

def _summary(rate: float, p99: float, lo: float | None, hi: float | None, *, contended: bool = False,
             replicas: int = 2) -> dict[str, object]:
    return {"mode": "open", "requested_rate": rate, "ok": 1000, "errors": 0, "requests": 1000, "error_rate": 0.0,
            "error_rate_lo": 0.0, "error_rate_hi": 0.004, "behind_schedule": False, "status": "complete",
            "contended": contended, "throughput_rps": rate,
            "latency_ms": {"p99": p99, "p99_lo": lo, "p99_hi": hi},
            "replicas": {"count": replicas, "changed": False, "seen": [replicas]}}


def test_judge_says_pass_fail_unsure_untrusted() -> None:
    kw = {"slo_ms": 100.0, "max_error_rate": 0.01}
    assert judge(_summary(10, 50, 45, 60), **kw)[0] == "pass"
    assert judge(_summary(10, 150, 120, 180), **kw)[0] == "fail"
    assert judge(_summary(10, 95, 80, 110), **kw)[0] == "unsure"
    assert judge(_summary(10, 95, 80, None), **kw)[0] == "unsure"  # an open upper bound cannot show a pass
    assert judge(_summary(10, 50, 45, 60, contended=True), **kw)[0] == "untrusted"


def test_capacity_is_bracketed_by_the_last_pass_and_the_first_fail() -> None:
    steps = [_summary(10, 20, 18, 22), _summary(20, 40, 35, 45), _summary(30, 90, 80, 110),
             _summary(40, 300, 250, 400)]
    c = capacity_at_slo(steps, slo_ms=100.0, max_error_rate=0.01, nodes=2)
    assert (c["rps_lo"], c["rps"], c["rps_hi"]) == (20.0, 30.0, 40.0)
    assert c["per_replica_rps"] == 15.0 and c["per_node_rps_lo"] == 10.0
    assert c["relative_width"] == pytest.approx(20 / 30)


def test_a_contended_probe_widens_the_interval_instead_of_moving_the_estimate() -> None:
    quiet = [_summary(10, 20, 18, 22), _summary(20, 40, 35, 45), _summary(25, 60, 55, 70),
             _summary(30, 300, 250, 400)]
    busy = [*quiet[:2], _summary(25, 500, 450, 600, contended=True), quiet[3]]
    a = capacity_at_slo(quiet, slo_ms=100.0, max_error_rate=0.01)
    b = capacity_at_slo(busy, slo_ms=100.0, max_error_rate=0.01)
    assert (a["rps_lo"], a["rps"], a["rps_hi"]) == (25.0, 25.0, 30.0)
    assert (b["rps_lo"], b["rps_hi"]) == (20.0, 30.0) and b["rps"] >= 20.0
    assert b["excluded"][0]["verdict"] == "untrusted" and any("contended" in n for n in b["notes"])


def test_clients_and_repeats_merge_exactly_in_the_report() -> None:
    """Two client pods, each measuring the step twice: each repeat merges its clients' histograms, the repeats then
    pool into one point whose counts are all four records' and whose repeats are two."""
    from dataclasses import replace

    from eks_inference.analysis.aggregate import build_targets
    from eks_inference.tables.prices import DEFAULT_PRICES

    records = []
    for repeat in (0, 1):
        for client in (0, 1):
            st = _step(rate=40.0, repeat=repeat, seed=10 * repeat + client)
            records.append(replace(st, client_index=client, clients=2, source=f"c{client}.json"))
    (t,), _ = build_targets(records, slo_p99_ms=500.0, max_error_rate=0.01, prices=DEFAULT_PRICES)
    (point,) = t.points
    s = point.summary
    assert s["repeats"] == 2 and s["ok"] == 4 * 800 and s["clients"] == 2
    pooled = summarize([*records])  # the same four histograms merged in one go
    assert s["latency_ms"]["p99"] == pooled["latency_ms"]["p99"]
    assert s["throughput_rps"] == pytest.approx(80.0, rel=0.05)  # two clients' 40/s, averaged over the repeats


def test_the_estimate_stays_below_a_lower_step_whose_estimate_missed() -> None:
    """A noisy run: 128/s missed the SLO on its estimate (interval straddling it), 147/s met it. Latency grows with
    load, so 147/s meeting it was luck: the estimate is the highest rate below the lower miss, and a note says so."""
    steps = [_summary(110, 40, 35, 45), _summary(124, 50, 45, 60), _summary(128, 700, 40, 1000),
             _summary(147, 90, 50, 600)]
    c = capacity_at_slo(steps, slo_ms=100.0, max_error_rate=0.01)
    assert (c["rps_lo"], c["rps"], c["rps_hi"]) == (124.0, 124.0, None)
    assert any("147" in n and "128" in n for n in c["notes"])

"""95 % intervals for every step figure, and how repeats of one step combine.

Every figure ``X`` of a step summary carries its bounds beside it as ``X_lo`` and ``X_hi``: ``throughput_rps``,
``inferences_per_s`` and ``error_rate`` at the top of the summary, each percentile inside ``latency_ms``
(``p99`` → ``p99_lo`` / ``p99_hi``); a report adds ``usd_per_million_inferences_at_step_lo`` / ``_hi``. A bound
is None where the samples cannot support one (the upper bound of a p99 from 200 requests: there is no 201st).

How each is computed, and why that is honest:

* **Percentiles** — a distribution-free order-statistic interval. Of n samples, the count below the true
  q-quantile is Binomial(n, q), so the j-th and k-th smallest samples bracket it with probability
  P(j <= B < k), whatever the latency distribution; j and k are picked so that each tail holds at most 2.5 %.
  Nothing is assumed about the shape of the tail, which is exactly where latency distributions are worst
  behaved (a normal approximation or a bootstrap of the p99 of a few hundred samples is over-confident: the
  bootstrap cannot produce values beyond the sample's maximum). The ranks are read off the merged HDR
  histogram, the lower bound at the bottom of its bucket and the upper at the top, so the bucket precision
  only widens the interval.
* **Error rate** — the Wilson score interval of errors / requests (sensible at 0 errors, unlike ± 1.96 σ).
* **Throughput** — batch means: a step's per-second completions are cut into windows of
  :data:`BATCH_S` seconds; the windows' rates give a Student-t interval of the mean. Windows of a few seconds
  are nearly independent where single seconds are not (a queue carries over from one second to the next).
* **Repeats** — the step is measured N times, interleaved with the other steps. The estimate pools every
  repeat (histograms merged exactly, counts summed, window rates pooled); the interval is the hull of that
  pooled interval and the repeats' own estimates: never narrower than the spread the repeats showed. Repeats
  whose SLO-percentile intervals have no value in common, or whose throughputs differ by more than
  :data:`UNSTABLE_THROUGHPUT_SPREAD` of their median, disagree beyond chance: the step is marked ``unstable``
  (and the runner measures it again while its budget lasts).

Pure functions of counts: no I/O, no clock; tested on synthetic data with known quantiles.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate
from typing import Any

from hdrh.histogram import HdrHistogram

CONFIDENCE = 0.95
Z = 1.959963984540054
BATCH_S = 2
"""Seconds per batch of the batch-means throughput interval."""
UNSTABLE_THROUGHPUT_SPREAD = 0.10
"""Repeats whose throughputs span more than this share of their median disagree (a drifting or contended run)."""
EXACT_BINOMIAL_MAX_N = 20_000
"""Up to this many samples the binomial ranks are exact; beyond, the normal approximation is within a rank."""

_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """Two-sided 95 % Student-t quantile for ``df`` degrees of freedom (table to 30, then a 1/df expansion)."""
    if df < 1:
        raise ValueError(f"degrees of freedom {df} < 1")
    if df <= len(_T975):
        return _T975[df - 1]
    return Z + (Z**3 + Z) / (4 * df) + (5 * Z**5 + 16 * Z**3 + 3 * Z) / (96 * df * df)


def _binom_cdf_table(n: int, q: float) -> list[float]:
    """P(B <= i) for i in 0..n, B ~ Binomial(n, q), summed in log space (no overflow at large n)."""
    lq, l1q = math.log(q), math.log1p(-q)
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lq + (n - i) * l1q
            for i in range(n + 1)]
    return list(accumulate(math.exp(x) for x in logs))


def quantile_ranks(n: int, q: float, confidence: float = CONFIDENCE) -> tuple[int | None, int | None]:
    """1-based ranks (j, k) of the order statistics that bracket the ``q``-quantile (0 < q < 1) of ``n`` samples
    with at least ``confidence``; None for a side the samples cannot bound (j below 1, k above n)."""
    if not 0 < q < 1:
        raise ValueError(f"quantile {q} is not in (0, 1)")
    if n <= 0:
        return None, None
    tail = (1 - confidence) / 2
    if n <= EXACT_BINOMIAL_MAX_N:
        cdf = _binom_cdf_table(n, q)
        # lower: the largest j with P(B <= j - 1) <= tail; upper: the smallest k with P(B >= k) <= tail.
        j = 0
        while j < n and cdf[j] <= tail:
            j += 1
        k = 1
        while k <= n and 1.0 - cdf[k - 1] > tail:
            k += 1
        lo: int | None = j if j >= 1 else None
        hi: int | None = k if k <= n else None
        return lo, hi
    sd = math.sqrt(n * q * (1 - q))
    zt = statistics.NormalDist().inv_cdf(1 - tail)
    j = math.floor(n * q - zt * sd)
    k = math.ceil(n * q + zt * sd) + 1
    return (j if j >= 1 else None), (k if k <= n else None)


def _value_at_rank(hist: HdrHistogram, cumulative: Sequence[int], rank: int, *, upper: bool) -> int:
    lo_i, hi_i = 0, len(cumulative) - 1
    while lo_i < hi_i:
        mid = (lo_i + hi_i) // 2
        if cumulative[mid] >= rank:
            hi_i = mid
        else:
            lo_i = mid + 1
    value = hist.get_value_from_index(lo_i)
    return int(hist.get_highest_equivalent_value(value) if upper else hist.get_lowest_equivalent_value(value))


def percentile_bounds_us(hist: HdrHistogram, percentiles: Mapping[str, float], *, max_us: int | None = None,
                         min_us: int | None = None) -> dict[str, tuple[int | None, int | None]]:
    """For each named percentile, the order-statistic interval in µs from the histogram's samples."""
    n = hist.get_total_count()
    out: dict[str, tuple[int | None, int | None]] = {}
    if n == 0:
        return dict.fromkeys(percentiles, (None, None))
    cumulative = list(accumulate(hist.counts))
    for name, p in percentiles.items():
        j, k = quantile_ranks(n, p / 100.0)
        lo = _value_at_rank(hist, cumulative, j, upper=False) if j is not None else None
        hi = _value_at_rank(hist, cumulative, k, upper=True) if k is not None else None
        if lo is not None and min_us is not None:
            lo = max(lo, min_us)
        if hi is not None and max_us is not None:
            hi = min(hi, max_us)
        out[name] = (lo, hi)
    return out


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float | None, float | None]:
    """Wilson score interval of the proportion ``k / n``."""
    if n <= 0:
        return None, None
    z = statistics.NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = k / n
    if k == 0:
        return 0.0, z * z / (n + z * z)
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def batch_rates(counts: Sequence[int], batch_s: int = BATCH_S) -> list[float]:
    """Per-second counts cut into whole batches of ``batch_s`` seconds (a short tail is dropped), as rates."""
    whole = len(counts) // batch_s
    return [sum(counts[i * batch_s:(i + 1) * batch_s]) / batch_s for i in range(whole)]


def mean_interval(values: Sequence[float], centre: float | None = None) -> tuple[float | None, float | None]:
    """Student-t 95 % interval of the mean of ``values`` (centred on ``centre`` when given); None with < 2."""
    if len(values) < 2:
        return None, None
    m = statistics.fmean(values) if centre is None else centre
    half = t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return max(0.0, m - half), m + half


def hull(interval: tuple[float | None, float | None], values: Iterable[float | None],
         ) -> tuple[float | None, float | None]:
    """The interval widened to contain every value (a None bound stays open)."""
    vs = [v for v in values if v is not None]
    lo, hi = interval
    if not vs:
        return lo, hi
    return (None if lo is None else min(lo, *vs)), (None if hi is None else max(hi, *vs))


def intervals_overlap(intervals: Sequence[tuple[float | None, float | None]]) -> bool:
    """Whether the intervals share at least one value (an open bound overlaps everything on its side)."""
    los = [lo for lo, _ in intervals if lo is not None]
    his = [hi for _, hi in intervals if hi is not None]
    return not los or not his or max(los) <= min(his)


def relative_width(estimate: float | None, lo: float | None, hi: float | None) -> float | None:
    """(hi − lo) / estimate, or None when a bound is open or the estimate is not positive."""
    if estimate is None or lo is None or hi is None or estimate <= 0:
        return None
    return (hi - lo) / estimate


def method_note() -> dict[str, Any]:
    """The words every summary carries about its intervals."""
    return {
        "confidence": CONFIDENCE,
        "percentiles": "order-statistic (binomial) interval on the merged histogram, hulled with the repeats' "
                       "estimates",
        "error_rate": "Wilson score interval, hulled with the repeats' estimates",
        "throughput": f"Student-t over {BATCH_S} s batch means of the per-second completions (all repeats "
                      "pooled), hulled with the repeats' estimates",
    }


def add_step_intervals(summary: dict[str, Any], hist: HdrHistogram, *, percentiles: Mapping[str, float],
                       per_second_ok: Sequence[int], min_us: int | None, max_us: int | None) -> dict[str, Any]:
    """Write the bounds of one measurement (one repeat, merged across its clients) into its summary."""
    lat = summary["latency_ms"]
    for name, (lo, hi) in percentile_bounds_us(hist, percentiles, max_us=max_us, min_us=min_us).items():
        lat[f"{name}_lo"] = None if lo is None else lo / 1000.0
        lat[f"{name}_hi"] = None if hi is None else hi / 1000.0
    summary["error_rate_lo"], summary["error_rate_hi"] = wilson(summary["errors"], summary["requests"])
    _throughput_bounds(summary, batch_rates(per_second_ok))
    summary["repeats"] = 1
    summary["interval_method"] = method_note()
    summary["batch_rates"] = batch_rates(per_second_ok)
    return summary


def _throughput_bounds(summary: dict[str, Any], rates: Sequence[float]) -> None:
    est = summary["throughput_rps"]
    lo, hi = mean_interval(rates, centre=est) if est else (None, None)
    if est == 0:
        lo, hi = 0.0, 0.0
    summary["throughput_rps_lo"], summary["throughput_rps_hi"] = lo, hi
    per_request = summary["inferences_per_s"] / est if est else 0.0
    summary["inferences_per_s_lo"] = None if lo is None else lo * per_request
    summary["inferences_per_s_hi"] = None if hi is None else hi * per_request

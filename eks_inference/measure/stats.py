"""Latency statistics on HDR histograms: recording, exact merging, percentiles, per-second series.

Percentiles cannot be averaged: the p99 of two clients is not the mean of their p99s (one slow pod
hides in the mean). Every client therefore ships its whole latency distribution as an encoded HDR
histogram with one fixed configuration (1 µs .. 1 h, 3 significant digits), and any number of them add
up bucket by bucket into exactly the histogram one client would have recorded for all the samples.
Exact minimum and maximum travel alongside, because a histogram only knows them to its precision.

Nothing here does I/O or reads a clock: the runner passes times in, so this is tested on plain numbers.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from hdrh.histogram import HdrHistogram

HIST_LOWEST_US = 1
HIST_HIGHEST_US = 3_600_000_000
HIST_SIGNIFICANT_DIGITS = 3
PERCENTILES: Mapping[str, float] = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
MIN_TAIL_SAMPLES = 10
"""A percentile is trusted when at least this many samples lie above it. With fewer, it is one of the last few
order statistics: the p99 of 25 requests is simply their maximum, and the count beyond the true p99 in n
samples varies as sqrt(n/100), so ten of them keep the estimate within about a third of its tail."""


def min_samples(percentile: float) -> int:
    """Samples a percentile needs: ``MIN_TAIL_SAMPLES / (1 − p)`` — p50 20, p90 100, p95 200, p99 1000,
    p99.9 10000."""
    return math.ceil(round(MIN_TAIL_SAMPLES / (1.0 - percentile / 100.0), 6))


MIN_SAMPLES: Mapping[str, int] = {name: min_samples(p) for name, p in PERCENTILES.items()}


def few_samples(n: int) -> list[str]:
    """The percentiles that ``n`` samples cannot resolve by the :data:`MIN_TAIL_SAMPLES` rule (none when n is 0:
    there is then no value to flag)."""
    return [name for name, need in MIN_SAMPLES.items() if 0 < n < need]


def new_histogram() -> HdrHistogram:
    """A histogram in microseconds with the one configuration every result file uses."""
    return HdrHistogram(HIST_LOWEST_US, HIST_HIGHEST_US, HIST_SIGNIFICANT_DIGITS)


def to_us(seconds: float) -> int:
    """Seconds to whole microseconds, clamped into the histogram's range (never dropped)."""
    return min(HIST_HIGHEST_US, max(0, round(seconds * 1e6)))


def encode(hist: HdrHistogram) -> str:
    """Compressed, base64 HdrHistogram V2 blob (readable by every HdrHistogram implementation)."""
    blob = hist.encode()
    return blob.decode("ascii") if isinstance(blob, bytes) else str(blob)


def decode(blob: str) -> HdrHistogram:
    hist = HdrHistogram.decode(blob.encode("ascii"))
    if (hist.significant_figures, hist.lowest_trackable_value) != (HIST_SIGNIFICANT_DIGITS, HIST_LOWEST_US):
        # A foreign configuration still merges (value by value), but precision would silently differ.
        raise ValueError(
            f"histogram has {hist.significant_figures} significant digits and lowest value "
            f"{hist.lowest_trackable_value}; expected {HIST_SIGNIFICANT_DIGITS} and {HIST_LOWEST_US}"
        )
    return hist


def merge(blobs: Iterable[str]) -> HdrHistogram:
    """Add encoded histograms bucket by bucket: exact, order-independent."""
    total = new_histogram()
    for blob in blobs:
        if blob:
            total.add(decode(blob))
    return total


def percentiles_us(hist: HdrHistogram, percentiles: Mapping[str, float] = PERCENTILES) -> dict[str, int]:
    """Percentiles in µs, 0 when empty: HdrHistogram's definition (the top of the bucket holding the
    sample of rank round(p·N/100)), found by bisecting cumulative counts instead of the library's
    per-bucket Python loop."""
    total = hist.get_total_count()
    if total == 0:
        return dict.fromkeys(percentiles, 0)
    cumulative = list(accumulate(hist.counts))
    out = {}
    for name, p in percentiles.items():
        index = bisect_left(cumulative, hist.get_target_count_at_percentile(p))
        out[name] = int(hist.get_highest_equivalent_value(hist.get_value_from_index(index)))
    return out


def latency_summary_ms(hist: HdrHistogram, *, min_us: int | None, max_us: int | None,
                       sum_us: int | None = None) -> dict[str, float | None]:
    """The latency block of every summary: percentiles from the histogram, exact min/max/mean when known."""
    n = hist.get_total_count()
    if n == 0:
        return {**dict.fromkeys(PERCENTILES), "max": None, "min": None, "mean": None}
    top = max_us if max_us is not None else hist.get_max_value()
    # A percentile is reported at the top of its bucket; no sample exceeds the exact max, so neither may it.
    out: dict[str, float | None] = {k: min(v, top) / 1000.0 for k, v in percentiles_us(hist).items()}
    out["max"] = top / 1000.0
    out["min"] = (min_us if min_us is not None else hist.get_min_value()) / 1000.0
    out["mean"] = (sum_us / n if sum_us is not None else hist.get_mean_value()) / 1000.0
    return out


@dataclass(frozen=True, kw_only=True)
class SecondBucket:
    """Completions in one wall-clock second (``t`` is the epoch second).

    Sum and maximum of the successes' latencies merge exactly across clients (sum, max), so the
    per-second mean and worst case survive a merge; percentiles live in the step's histogram.
    """

    t: int
    ok: int
    errors: int
    latency_sum_us: int = 0
    latency_max_us: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "ok": self.ok, "errors": self.errors, "latency_sum_us": self.latency_sum_us,
                "latency_max_us": self.latency_max_us}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> SecondBucket:
        return SecondBucket(t=int(d["t"]), ok=int(d["ok"]), errors=int(d["errors"]),
                            latency_sum_us=int(d.get("latency_sum_us", 0)),
                            latency_max_us=int(d.get("latency_max_us", 0)))


class FastRecorder:
    """Records into an :class:`HdrHistogram` without its per-call overhead.

    The library's ``record_value`` is pure Python (~5 µs); at thousands of requests per second on one
    core that is a real share of the client's budget. This inlines the same bucket arithmetic
    (``bit_length`` for the library's string-based leading-zero count), verified against the library
    when created; if a future release changed its layout the check fails and recording falls back to
    ``record_value``. Values must already be clamped into range (:func:`to_us`).
    """

    __slots__ = ("_counts", "_fast", "_hist", "_mask", "_max", "_min", "_n", "_shc", "_shcm", "_shift", "_um")

    def __init__(self, hist: HdrHistogram) -> None:
        self._hist = hist
        self._counts = hist.counts
        self._mask = hist.sub_bucket_mask
        self._um = hist.unit_magnitude
        self._shcm = hist.sub_bucket_half_count_magnitude
        self._shc = hist.sub_bucket_half_count
        self._shift = self._um + self._shcm + 1
        self._n = 0
        self._min = HIST_HIGHEST_US + 1
        self._max = -1
        probes = (0, 1, 2, 1023, 2047, 2048, 4097, 65_535, 123_456, 10**7 + 7, HIST_HIGHEST_US)
        self._fast = all(self._index(v) == hist._counts_index_for(v) for v in probes)

    def _index(self, v: int) -> int:
        b = (v | self._mask).bit_length() - self._shift
        return ((b + 1) << self._shcm) + (v >> (b + self._um)) - self._shc

    def record(self, v: int) -> None:
        if not self._fast:
            self._hist.record_value(v)
            return
        b = (v | self._mask).bit_length() - self._shift
        self._counts[((b + 1) << self._shcm) + (v >> (b + self._um)) - self._shc] += 1
        self._n += 1
        if v > self._max:
            self._max = v
        if v < self._min:
            self._min = v

    def histogram(self) -> HdrHistogram:
        """The histogram with its totals brought up to date (call once recording is over)."""
        h = self._hist
        if self._fast and self._n:
            h.total_count += self._n
            h.min_value = min(h.min_value, self._min)
            h.max_value = max(h.max_value, self._max)
            self._n = 0
        return h


@dataclass(frozen=True, kw_only=True)
class StepStats:
    """What one client measured in one step; everything needed to merge it with other clients exactly.

    :param window_start: epoch seconds when measurement began (warm-up over).
    :param window_s: the measured span that throughput is computed over (see the runner).
    :param last_completion: epoch seconds of the last measured completion (``window_start`` if none).
    :param last_ok: the same for the last success.
    """

    ok: int
    errors_by_kind: Mapping[str, int]
    unfinished: int
    inferences: int
    latency_hist: str
    min_us: int | None
    max_us: int | None
    sum_us: int
    lag_hist: str
    lag_max_us: int | None
    window_start: float
    window_s: float
    last_completion: float
    last_ok: float
    series: tuple[SecondBucket, ...] = field(default_factory=tuple)
    cold: int = 0
    """Of ``ok``: answers a family's replica marked cold (it loaded the member for them)."""
    cold_hist: str | None = None
    """Latency of the cold answers, and of the warm ones below; None when the target marks none (not a family)."""
    warm_hist: str | None = None
    working_set: Mapping[str, Any] | None = None
    """A family step's mix, routing, replicas and members per budget (:mod:`eks_inference.measure.working_set`), as
    the client that read the target's ``/info`` at the step's end recorded them; None otherwise."""

    @property
    def errors(self) -> int:
        return sum(self.errors_by_kind.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors_by_kind": dict(sorted(self.errors_by_kind.items())),
            "unfinished": self.unfinished,
            "inferences": self.inferences,
            "latency": {"unit": "us", "hist": self.latency_hist, "min_us": self.min_us, "max_us": self.max_us,
                        "sum_us": self.sum_us},
            "schedule_lag": {"unit": "us", "hist": self.lag_hist, "max_us": self.lag_max_us},
            "window_start": self.window_start,
            "window_s": self.window_s,
            "last_completion": self.last_completion,
            "last_ok": self.last_ok,
            "series": [b.to_dict() for b in self.series],
            **({"family": {"cold": self.cold, "cold_hist": self.cold_hist, "warm_hist": self.warm_hist,
                           **({"working_set": dict(self.working_set)} if self.working_set is not None else {})}}
               if self.cold_hist is not None else {}),
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> StepStats:
        lat, lag = d["latency"], d["schedule_lag"]
        return StepStats(
            ok=int(d["ok"]),
            errors_by_kind={str(k): int(v) for k, v in d["errors_by_kind"].items()},
            unfinished=int(d.get("unfinished", 0)),
            inferences=int(d["inferences"]),
            latency_hist=str(lat["hist"]),
            min_us=lat.get("min_us"),
            max_us=lat.get("max_us"),
            sum_us=int(lat["sum_us"]),
            lag_hist=str(lag["hist"]),
            lag_max_us=lag.get("max_us"),
            window_start=float(d["window_start"]),
            window_s=float(d["window_s"]),
            last_completion=float(d["last_completion"]),
            last_ok=float(d["last_ok"]),
            series=tuple(SecondBucket.from_dict(b) for b in d.get("series", [])),
            cold=int((d.get("family") or {}).get("cold", 0)),
            cold_hist=(d.get("family") or {}).get("cold_hist"),
            warm_hist=(d.get("family") or {}).get("warm_hist"),
            working_set=(d.get("family") or {}).get("working_set"),
        )


class StepRecorder:
    """Collects one step's outcomes as they complete; times are epoch seconds supplied by the caller.

    Mutable on purpose and single-threaded (the event loop calls it); :meth:`finish` freezes it into a
    :class:`StepStats`. Per-second buckets are closed as soon as their second is over.
    """

    def __init__(self, *, window_start: float) -> None:
        self.window_start = window_start
        self._lat = FastRecorder(new_histogram())
        self._lag = FastRecorder(new_histogram())
        self.ok = 0
        self.inferences = 0
        self.errors_by_kind: dict[str, int] = {}
        self.min_us: int | None = None
        self.max_us: int | None = None
        self.sum_us = 0
        self.lag_max_us: int | None = None
        self.last_completion = window_start
        self.last_ok = window_start
        self._series: list[SecondBucket] = []
        self._sec = math.floor(window_start)
        self._sec_ok = 0
        self._sec_err = 0
        self._sec_sum = 0
        self._sec_max = 0
        self.cold = 0
        self._cold: FastRecorder | None = None
        self._warm: FastRecorder | None = None

    @property
    def errors(self) -> int:
        return sum(self.errors_by_kind.values())

    def _roll(self, t: float) -> None:
        sec = math.floor(t)
        if sec <= self._sec:
            return
        self._flush()
        for empty in range(self._sec + 1, sec):
            self._series.append(SecondBucket(t=empty, ok=0, errors=0))
        self._sec = sec

    def _flush(self) -> None:
        self._series.append(SecondBucket(t=self._sec, ok=self._sec_ok, errors=self._sec_err,
                                         latency_sum_us=self._sec_sum, latency_max_us=self._sec_max))
        self._sec_ok = self._sec_err = self._sec_sum = self._sec_max = 0

    def record_ok(self, latency_s: float, t_done: float, inferences: int = 1, cold: bool | None = None) -> None:
        """``cold``: a family's replica marked the answer cold (True) or warm (False); None: no such mark."""
        us = int(latency_s * 1e6 + 0.5)  # to_us(), inlined: this runs once per response
        if us < 0:
            us = 0
        elif us > HIST_HIGHEST_US:
            us = HIST_HIGHEST_US
        self._lat.record(us)
        if cold is not None:
            self._split(us, cold)
        if self.max_us is None or us > self.max_us:
            self.max_us = us
        if self.min_us is None or us < self.min_us:
            self.min_us = us
        self.ok += 1
        self.sum_us += us
        self.inferences += inferences
        if t_done >= self._sec + 1:
            self._roll(t_done)
        self._sec_ok += 1
        self._sec_sum += us
        if us > self._sec_max:
            self._sec_max = us
        if t_done > self.last_completion:
            self.last_completion = t_done
        if t_done > self.last_ok:
            self.last_ok = t_done

    def _split(self, us: int, cold: bool) -> None:
        if self._cold is None or self._warm is None:
            self._cold, self._warm = FastRecorder(new_histogram()), FastRecorder(new_histogram())
        if cold:
            self.cold += 1
            self._cold.record(us)
        else:
            self._warm.record(us)

    def record_error(self, kind: str, t_done: float) -> None:
        self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1
        if t_done >= self._sec + 1:
            self._roll(t_done)
        self._sec_err += 1
        if t_done > self.last_completion:
            self.last_completion = t_done

    def record_lag(self, lag_s: float) -> None:
        us = int(lag_s * 1e6 + 0.5) if lag_s > 0 else 0
        if us > HIST_HIGHEST_US:
            us = HIST_HIGHEST_US
        self._lag.record(us)
        if self.lag_max_us is None or us > self.lag_max_us:
            self.lag_max_us = us

    def finish(self, *, window_s: float, unfinished: int = 0) -> StepStats:
        if self._sec_ok or self._sec_err or not self._series:
            self._flush()
        return StepStats(
            ok=self.ok,
            errors_by_kind=dict(self.errors_by_kind),
            unfinished=unfinished,
            inferences=self.inferences,
            latency_hist=encode(self._lat.histogram()),
            min_us=self.min_us,
            max_us=self.max_us,
            sum_us=self.sum_us,
            lag_hist=encode(self._lag.histogram()),
            lag_max_us=self.lag_max_us,
            window_start=self.window_start,
            window_s=window_s,
            last_completion=self.last_completion,
            last_ok=self.last_ok,
            series=tuple(self._series),
            cold=self.cold,
            cold_hist=encode(self._cold.histogram()) if self._cold is not None else None,
            warm_hist=encode(self._warm.histogram()) if self._warm is not None else None,
        )


def achieved_rps(st: StepStats) -> float:
    """Successes per second over the time they really took.

    Normally that is the measured window. When the last success came later than the window plus the
    fastest response — an overloaded server working off its queue, or a client sending late — the span
    stretches to it, so offered load is never reported as achieved throughput.
    """
    if st.ok == 0:
        return 0.0
    span = max(st.window_s, st.last_ok - st.window_start - (st.min_us or 0) / 1e6)
    return st.ok / span if span > 0 else 0.0


def common_window(windows: Iterable[tuple[float, float]]) -> tuple[float, float] | None:
    """Intersection of ``(start, end)`` spans in epoch seconds, or None when they do not overlap."""
    ws = list(windows)
    if not ws:
        return None
    start = max(s for s, _ in ws)
    end = min(e for _, e in ws)
    return (start, end) if end > start else None


def ok_in_window(series: Iterable[SecondBucket], start: float, end: float) -> tuple[int, int]:
    """(successes, whole seconds) over the whole seconds inside ``[start, end)``."""
    first, last = math.ceil(start), math.floor(end)
    if last <= first:
        return 0, 0
    total = sum(b.ok for b in series if first <= b.t < last)
    return total, last - first

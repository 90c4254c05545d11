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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

HIST_LOWEST_US = 1
HIST_HIGHEST_US = 3_600_000_000
HIST_SIGNIFICANT_DIGITS = 3
PERCENTILES: Mapping[str, float] = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}


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


def percentiles_us(hist: HdrHistogram) -> dict[str, int]:
    """p50..p99.9 in µs (each the highest value equivalent to the sample at that rank), 0 when empty."""
    if hist.get_total_count() == 0:
        return dict.fromkeys(PERCENTILES, 0)
    values = hist.get_percentile_to_value_dict(list(PERCENTILES.values()))
    return {name: int(values[p]) for name, p in PERCENTILES.items()}


def latency_summary_ms(hist: HdrHistogram, *, min_us: int | None, max_us: int | None) -> dict[str, float | None]:
    """The latency block of every summary: percentiles from the histogram, exact min/max when known."""
    n = hist.get_total_count()
    if n == 0:
        return {**dict.fromkeys(PERCENTILES), "max": None, "min": None, "mean": None}
    top = max_us if max_us is not None else hist.get_max_value()
    # A percentile is reported at the top of its bucket; no sample exceeds the exact max, so neither may it.
    out: dict[str, float | None] = {k: min(v, top) / 1000.0 for k, v in percentiles_us(hist).items()}
    out["max"] = top / 1000.0
    out["min"] = (min_us if min_us is not None else hist.get_min_value()) / 1000.0
    out["mean"] = hist.get_mean_value() / 1000.0
    return out


@dataclass(frozen=True, kw_only=True)
class SecondBucket:
    """Completions in one wall-clock second (``t`` is the epoch second); ``hist`` covers successes."""

    t: int
    ok: int
    errors: int
    hist: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "ok": self.ok, "errors": self.errors, "hist": self.hist}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> SecondBucket:
        return SecondBucket(t=int(d["t"]), ok=int(d["ok"]), errors=int(d["errors"]), hist=str(d.get("hist", "")))


@dataclass(frozen=True, kw_only=True)
class StepStats:
    """What one client measured in one step; everything needed to merge it with other clients exactly.

    :param window_start: epoch seconds when measurement began (warm-up over).
    :param window_s: the measured span that throughput is computed over (see the runner).
    :param last_completion: epoch seconds of the last measured completion (``window_start`` if none).
    """

    ok: int
    errors_by_kind: Mapping[str, int]
    unfinished: int
    inferences: int
    latency_hist: str
    min_us: int | None
    max_us: int | None
    lag_hist: str
    lag_max_us: int | None
    window_start: float
    window_s: float
    last_completion: float
    series: tuple[SecondBucket, ...] = field(default_factory=tuple)

    @property
    def errors(self) -> int:
        return sum(self.errors_by_kind.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors_by_kind": dict(sorted(self.errors_by_kind.items())),
            "unfinished": self.unfinished,
            "inferences": self.inferences,
            "latency": {"unit": "us", "hist": self.latency_hist, "min_us": self.min_us, "max_us": self.max_us},
            "schedule_lag": {"unit": "us", "hist": self.lag_hist, "max_us": self.lag_max_us},
            "window_start": self.window_start,
            "window_s": self.window_s,
            "last_completion": self.last_completion,
            "series": [b.to_dict() for b in self.series],
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
            lag_hist=str(lag["hist"]),
            lag_max_us=lag.get("max_us"),
            window_start=float(d["window_start"]),
            window_s=float(d["window_s"]),
            last_completion=float(d["last_completion"]),
            series=tuple(SecondBucket.from_dict(b) for b in d.get("series", [])),
        )


class StepRecorder:
    """Collects one step's outcomes as they complete; times are epoch seconds supplied by the caller.

    Mutable on purpose and single-threaded (the event loop calls it); :meth:`finish` freezes it into a
    :class:`StepStats`. The per-second histogram is encoded as soon as its second is over, so memory stays
    flat however long the step runs.
    """

    def __init__(self, *, window_start: float) -> None:
        self.window_start = window_start
        self.hist = new_histogram()
        self.lag = new_histogram()
        self.ok = 0
        self.inferences = 0
        self.errors_by_kind: dict[str, int] = {}
        self.min_us: int | None = None
        self.max_us: int | None = None
        self.lag_max_us: int | None = None
        self.last_completion = window_start
        self._series: list[SecondBucket] = []
        self._sec = math.floor(window_start)
        self._sec_hist = new_histogram()
        self._sec_ok = 0
        self._sec_err = 0

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
        blob = encode(self._sec_hist) if self._sec_ok else ""
        self._series.append(SecondBucket(t=self._sec, ok=self._sec_ok, errors=self._sec_err, hist=blob))
        if self._sec_ok:
            self._sec_hist = new_histogram()
        self._sec_ok = self._sec_err = 0

    def record_ok(self, latency_s: float, t_done: float, inferences: int = 1) -> None:
        us = to_us(latency_s)
        self.hist.record_value(us)
        if self.max_us is None or us > self.max_us:
            self.max_us = us
        if self.min_us is None or us < self.min_us:
            self.min_us = us
        self.ok += 1
        self.inferences += inferences
        if t_done >= self._sec + 1:
            self._roll(t_done)
        self._sec_hist.record_value(us)
        self._sec_ok += 1
        if t_done > self.last_completion:
            self.last_completion = t_done

    def record_error(self, kind: str, t_done: float) -> None:
        self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1
        if t_done >= self._sec + 1:
            self._roll(t_done)
        self._sec_err += 1
        if t_done > self.last_completion:
            self.last_completion = t_done

    def record_lag(self, lag_s: float) -> None:
        us = to_us(lag_s)
        self.lag.record_value(us)
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
            latency_hist=encode(self.hist),
            min_us=self.min_us,
            max_us=self.max_us,
            lag_hist=encode(self.lag),
            lag_max_us=self.lag_max_us,
            window_start=self.window_start,
            window_s=window_s,
            last_completion=self.last_completion,
            series=tuple(self._series),
        )


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

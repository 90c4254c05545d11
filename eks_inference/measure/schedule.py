"""Open-loop load that changes over one run: rate segments (steps) and ramps, for watching a target scale.

A schedule is a list of segments, each a rate held for some seconds or a ramp from one rate to another. Send
*n* is due when the expected number of arrivals so far, Λ(t) (the integral of the rate), reaches *n*: constant
spacing within a constant segment, spacing that shrinks along a rising ramp. Poisson arrivals draw unit
exponential gaps on the Λ axis and map them back through Λ⁻¹, the standard time change that turns a unit-rate
Poisson process into one of the given rate. Either way every send has an intended time fixed in advance, so
latency is measured from it and a server stall during a scale-out shows in every request due meanwhile.

Pure arithmetic, no clock: the runner adds its start time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eks_inference.config import ConfigError

MAX_RATE = 1_000_000.0
MAX_SCHEDULE_S = 86_400.0


@dataclass(frozen=True)
class Segment:
    """``rate_from`` requests/s rising (or falling) linearly to ``rate_to`` over ``seconds``; equal for a step."""

    rate_from: float
    rate_to: float
    seconds: float

    @property
    def requests(self) -> float:
        """Expected arrivals in the segment (its area)."""
        return (self.rate_from + self.rate_to) * self.seconds / 2.0

    @property
    def label(self) -> str:
        rate = f"{self.rate_from:g}" if self.rate_from == self.rate_to else f"{self.rate_from:g}→{self.rate_to:g}"
        return f"{rate} req/s × {self.seconds:g} s"

    def scaled(self, factor: float) -> Segment:
        return Segment(self.rate_from * factor, self.rate_to * factor, self.seconds)

    def offset_of(self, m: float) -> float:
        """Seconds into the segment at which ``m`` (0 <= m <= requests) arrivals are expected."""
        r0, r1, d = self.rate_from, self.rate_to, self.seconds
        if m <= 0:
            return 0.0
        if r0 == r1:
            return m / r0
        a = (r1 - r0) / (2.0 * d)
        # a·τ² + r0·τ − m = 0, written so that it stays exact for a near 0 and for a < 0.
        return 2.0 * m / (r0 + math.sqrt(max(0.0, r0 * r0 + 4.0 * a * m)))

    def to_list(self) -> list[float]:
        return [self.rate_from, self.rate_to, self.seconds]

    @staticmethod
    def from_any(value: Any) -> Segment:
        a, b, c = (float(x) for x in value)
        return Segment(a, b, c)


@dataclass(frozen=True)
class RateSchedule:
    """Segments played one after the other; times are seconds from the schedule's start."""

    segments: tuple[Segment, ...]

    def __post_init__(self) -> None:
        if not self.segments:
            raise ConfigError("--schedule: no segments; give RATE:SECONDS pairs like 10:30,40:60,10:60")
        if self.total_requests <= 0:
            raise ConfigError("--schedule: every segment has rate 0, so nothing would be sent; give a rate > 0")

    @property
    def total_s(self) -> float:
        return sum(s.seconds for s in self.segments)

    @property
    def total_requests(self) -> float:
        return sum(s.requests for s in self.segments)

    @property
    def mean_rate(self) -> float:
        return self.total_requests / self.total_s

    @property
    def boundaries(self) -> list[float]:
        """Start time of each segment, then the end of the last."""
        out, t = [0.0], 0.0
        for s in self.segments:
            t += s.seconds
            out.append(t)
        return out

    def scaled(self, factor: float) -> RateSchedule:
        """The same shape at ``factor`` times the rate (one client's share)."""
        return RateSchedule(tuple(s.scaled(factor) for s in self.segments))

    def time_at(self, n: float) -> float | None:
        """Λ⁻¹(n): when ``n`` arrivals are expected, or None once the schedule holds fewer."""
        done = 0.0
        start = 0.0
        for s in self.segments:
            if n < done + s.requests:
                return start + s.offset_of(n - done)
            done += s.requests
            start += s.seconds
        return None

    def segment_of(self, t: float) -> int:
        """Index of the segment that time ``t`` falls in (the last one for t at or past the end)."""
        for i, end in enumerate(self.boundaries[1:]):
            if t < end:
                return i
        return len(self.segments) - 1

    def rate_at(self, t: float) -> float:
        i = self.segment_of(t)
        s = self.segments[i]
        f = min(1.0, max(0.0, (t - self.boundaries[i]) / s.seconds))
        return s.rate_from + (s.rate_to - s.rate_from) * f

    @property
    def label(self) -> str:
        return "schedule " + ", ".join(s.label for s in self.segments)

    def to_list(self) -> list[list[float]]:
        return [s.to_list() for s in self.segments]

    @staticmethod
    def from_any(value: Iterable[Any]) -> RateSchedule:
        return RateSchedule(tuple(Segment.from_any(v) for v in value))


_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_SEGMENT_RE = re.compile(rf"^{_NUMBER}(?:-{_NUMBER})?:{_NUMBER}$")


def _checked(seg: Segment, option: str, text: str) -> Segment:
    for r in (seg.rate_from, seg.rate_to):
        if not (0 <= r <= MAX_RATE) or not math.isfinite(r):
            raise ConfigError(f"{option}: rate {r:g} in {text!r} is outside 0..{MAX_RATE:g} requests/s")
    if not (0 < seg.seconds <= MAX_SCHEDULE_S):
        raise ConfigError(f"{option}: {seg.seconds:g} s in {text!r} is not in (0, {MAX_SCHEDULE_S:g}] seconds")
    return seg


def parse_schedule(text: str, *, option: str = "--schedule") -> tuple[Segment, ...]:
    """``10:30,40:60,10:60`` (rate:seconds steps) and ``10-40:60`` (a ramp from 10 to 40 over 60 s)."""
    out = []
    for item in (x.strip() for x in text.split(",")):
        m = _SEGMENT_RE.match(item)
        if not m:
            raise ConfigError(f"{option}: {item!r} in {text!r} is not RATE:SECONDS or FROM-TO:SECONDS; write e.g. "
                              "10:30,40:60,10:60 or 10-40:60")
        lo = float(m[1])
        hi = float(m[2]) if m[2] is not None else lo
        out.append(_checked(Segment(lo, hi, float(m[3])), option, text))
    return tuple(out)


def parse_ramp(text: str, *, option: str = "--ramp") -> Segment:
    """``FROM:TO:SECONDS`` → one ramp segment."""
    parts = text.split(":")
    try:
        lo, hi, secs = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{option}: {text!r} is not FROM:TO:SECONDS; write e.g. 5:40:120") from None
    return _checked(Segment(lo, hi, secs), option, text)


def build_schedule(schedule: str | None, ramp: str | None) -> tuple[Segment, ...]:
    """The command line's ``--schedule`` segments, then its ``--ramp``; empty when neither is given."""
    segments: list[Segment] = []
    if schedule is not None:
        segments += parse_schedule(schedule)
    if ramp is not None:
        segments.append(parse_ramp(ramp))
    if segments:
        RateSchedule(tuple(segments))
    return tuple(segments)

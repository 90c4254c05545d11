"""The vocabulary of a measurement: loop modes, arrivals, the target measured and one step of a run.

Both sides of a load test speak it: the load generator builds steps from a run's options, and every result
file, merge and report reads them back (``to_dict`` / ``from_dict``), so a step means the same on both.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from eks_inference.config import ConfigError, Processor
from eks_inference.measure.schedule import RateSchedule, Segment

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class Mode(str, Enum):
    OPEN = "open"
    CLOSED = "closed"


class Arrival(str, Enum):
    CONSTANT = "constant"
    POISSON = "poisson"


@dataclass(frozen=True, kw_only=True)
class TargetInfo:
    """What is being measured and what it costs to run.

    :param name: label in reports; targets with the same name are one curve. Default: the URL's last
        path segment.
    :param processor: graviton, inferentia, gpu or cpu; None when unknown.
    :param instance_type: EC2 type for pricing (any label for a non-EC2 machine: its price is then n/a
        unless ``--prices`` names it).
    :param nodes: instances serving the target, default 1; cost is ``nodes`` × the hourly price.
    :param region: for the price lookup; None falls back to the report's ``--region``.
    :param price_as: an EC2 type to price the target as when it did not run on one (a laptop, the local
        demo); takes precedence over ``instance_type`` for the price, and every cost it yields is labelled
        "priced as". Default None.
    :param price_note: why ``price_as`` is that type (``closest to this host: ...``), shown beside it. Default None.
    :param placement: what the target occupies beyond whole worker nodes, as ``ROLE=TYPE:NODES,...``
        (:func:`eks_inference.costs.target_placement`: workers, head and sidecars, each at its share of the node it
        runs on); when set it prices the target instead of ``nodes`` × the price. Default None.
    """

    name: str
    url: str
    processor: str | None = None
    instance_type: str | None = None
    nodes: int = 1
    region: str | None = None
    price_as: str | None = None
    price_note: str | None = None
    placement: str | None = None

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise ConfigError(
                f"--target-name: {self.name!r} is not a valid name; use letters, digits, '.', '_' or '-'"
            )
        allowed = [p.value for p in Processor]
        if self.processor is not None and self.processor not in allowed:
            raise ConfigError(f"--processor: {self.processor!r} is not a processor; use one of {', '.join(allowed)}")
        if self.instance_type is not None and not NAME_RE.match(self.instance_type):
            raise ConfigError(f"--instance-type: {self.instance_type!r} is not an instance type, e.g. c7g.xlarge")
        if self.price_as is not None and not NAME_RE.match(self.price_as):
            raise ConfigError(f"--price-as: {self.price_as!r} is not an instance type, e.g. c7i.large")
        if isinstance(self.nodes, bool) or not isinstance(self.nodes, int) or self.nodes < 1:
            raise ConfigError(f"--nodes: {self.nodes!r} is not a whole number >= 1")

    @property
    def priced_type(self) -> str | None:
        """The instance type its cost is computed from."""
        return self.price_as or self.instance_type

    @property
    def instances_label(self) -> str:
        """``c7g.xlarge × 2``, or ``priced as c7i.large × 1`` when it did not run on that type."""
        if self.price_as:
            ran = f" (ran on {self.instance_type})" if self.instance_type else ""
            return f"priced as {self.price_as} × {self.nodes}{ran}"
        return f"{self.instance_type or '?'} × {self.nodes}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TargetInfo:
        return TargetInfo(name=d["name"], url=d.get("url", ""), processor=d.get("processor"),
                          instance_type=d.get("instance_type"), nodes=int(d.get("nodes", 1)),
                          region=d.get("region"), price_as=d.get("price_as"), price_note=d.get("price_note"),
                          placement=d.get("placement"))


def _whole_ceil(x: float) -> int:
    """``ceil(x)``, except that a product meant to be whole (1.5 s × 50/s = 75.00000000000001) stays whole."""
    n = round(x)
    return n if abs(x - n) <= 1e-9 * max(1.0, abs(x)) else math.ceil(x)


@dataclass(frozen=True, kw_only=True)
class StepSpec:
    """One measured step and this client's share of it (totals are across all clients of the run).

    :param rate: total requested requests/s (open loop), or the closed loop's total pacing rate; for a
        schedule, its mean.
    :param concurrency: total in-flight requests (closed loop).
    :param requests: this client's measured requests when the step is bounded by count.
    :param schedule: total rates over time (:mod:`eks_inference.measure.schedule`) when the rate changes
        within the step; each client sends its share. Default none: ``rate`` throughout.
    """

    index: int
    mode: Mode
    arrival: Arrival
    rate: float | None
    concurrency: int | None
    client_rate: float | None
    client_concurrency: int | None
    duration_s: float | None
    requests: int | None
    warmup_s: float
    schedule: tuple[Segment, ...] = ()
    repeat: int = 0
    """Which measurement of this step it is (0 first): ``--repeats`` measures every step several times, interleaved."""

    @property
    def client_schedule(self) -> RateSchedule | None:
        """This client's share of the schedule (rates divided like ``client_rate``)."""
        if not self.schedule or not self.rate or not self.client_rate:
            return None
        return RateSchedule(self.schedule).scaled(self.client_rate / self.rate)

    def constant_schedule(self) -> tuple[int, int | None]:
        """For constant arrivals, the measured sends as indices ``[first, end)`` of the schedule (send *n* is
        due ``n / client_rate`` after the step starts); ``end`` is None for an unbounded step.

        Decided on whole indices, never by comparing float times: ``t0 + n / rate`` and
        ``(t0 + warmup) + duration`` can round apart by one ulp, and then the send due exactly at the end
        of the window counts as measured (76 requests in a 1.5 s step at 50/s, depending only on the
        monotonic clock's value).
        """
        assert self.mode is Mode.OPEN and self.arrival is Arrival.CONSTANT and self.client_rate
        first = _whole_ceil(self.warmup_s * self.client_rate)
        if self.requests is not None:
            return first, first + self.requests
        if self.duration_s is not None:
            return first, first + _whole_ceil(self.duration_s * self.client_rate)
        return first, None

    @property
    def label(self) -> str:
        if self.schedule:
            return f"{RateSchedule(self.schedule).label} ({self.arrival.value})"
        if self.mode is Mode.OPEN:
            return f"{self.rate:g} req/s ({self.arrival.value})"
        paced = f", paced {self.rate:g} req/s" if self.rate else ""
        return f"concurrency {self.concurrency}{paced}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mode"], d["arrival"] = self.mode.value, self.arrival.value
        if self.schedule:
            d["schedule"] = [s.to_list() for s in self.schedule]
        else:
            d.pop("schedule")
        if not self.repeat:
            d.pop("repeat")
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> StepSpec:
        return StepSpec(
            index=int(d["index"]), mode=Mode(d["mode"]), arrival=Arrival(d["arrival"]),
            rate=d.get("rate"), concurrency=d.get("concurrency"), client_rate=d.get("client_rate"),
            client_concurrency=d.get("client_concurrency"), duration_s=d.get("duration_s"),
            requests=d.get("requests"), warmup_s=float(d.get("warmup_s", 0.0)),
            schedule=tuple(Segment.from_any(x) for x in d.get("schedule") or ()),
            repeat=int(d.get("repeat", 0)),
        )

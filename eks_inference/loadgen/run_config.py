"""What a load-test run will do, validated before the first request: steps, search, bounds.

Everything a result file needs to be reproduced lives in :class:`RunConfig` (it is written verbatim
into the result's provenance), and every bad value fails here with a message naming the option, the
value and the fix, rather than halfway through a sweep.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from eks_inference.config import ConfigError
from eks_inference.loadgen.client import Engine
from eks_inference.loadgen.model_mix import check_ids, parse_mix
from eks_inference.measure.repeats import SLO_PERCENTILES
from eks_inference.measure.schedule import RateSchedule, Segment
from eks_inference.measure.spec import Arrival, Mode, StepSpec, TargetInfo

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
MAX_RATE = 1_000_000.0
MAX_CONCURRENCY = 100_000
DEFAULT_MAX_CONNECTIONS = 1024
"""Open-loop pools hold ``rate × 0.5 s`` connections (64..1024): enough in flight for any server inside a
sub-second SLO, while an overloaded server makes requests queue in the client (cheap, and still timed
from their intended send) rather than open thousands of connections (costly on both sides)."""


def parse_rates(text: str, *, option: str = "--rates") -> tuple[float, ...]:
    """``10,20,40`` → (10.0, 20.0, 40.0); rejects empty, non-numeric, non-positive, non-finite values."""
    items = [x.strip() for x in text.split(",")]
    out = []
    for x in items:
        try:
            v = float(x)
        except ValueError:
            raise ConfigError(f"{option}: {x!r} in {text!r} is not a number; give requests/s like 10,20,40") from None
        if not math.isfinite(v) or v <= 0 or v > MAX_RATE:
            raise ConfigError(f"{option}: {x!r} is not a rate in (0, {MAX_RATE:g}] requests/s; use e.g. 10,20,40")
        out.append(v)
    return tuple(out)


def parse_fractions(text: str, *, option: str = "--capacity-fractions") -> tuple[float, ...]:
    """``0.3,0.6,1.1`` → (0.3, 0.6, 1.1): fractions of a measured capacity, each in (0, 10]."""
    out = []
    for x in (s.strip() for s in text.split(",")):
        try:
            v = float(x)
        except ValueError:
            raise ConfigError(f"{option}: {x!r} in {text!r} is not a number; use e.g. 0.3,0.6,0.9,1.1") from None
        if not math.isfinite(v) or not 0 < v <= 10:
            raise ConfigError(f"{option}: {x!r} is not a fraction in (0, 10]; use e.g. 0.3,0.6,0.9,1.1")
        out.append(v)
    return tuple(out)


def rates_from_capacity(capacity_rps: float, fractions: Sequence[float]) -> tuple[float, ...]:
    """Open-loop rates at ``fractions`` of a measured capacity, to three significant digits (readable labels),
    never below 0.1 requests/s."""
    return tuple(max(0.1, float(f"{capacity_rps * f:.3g}")) for f in fractions)


def parse_concurrencies(text: str, *, option: str = "--concurrencies") -> tuple[int, ...]:
    """``1,4,16`` → (1, 4, 16); rejects anything that is not a whole number >= 1."""
    out = []
    for x in (s.strip() for s in text.split(",")):
        try:
            v = int(x)
        except ValueError:
            raise ConfigError(f"{option}: {x!r} in {text!r} is not a whole number; use e.g. 1,4,16") from None
        if v < 1 or v > MAX_CONCURRENCY:
            raise ConfigError(f"{option}: {v} is outside 1..{MAX_CONCURRENCY}; use e.g. 1,4,16")
        out.append(v)
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class SearchSpec:
    """Find the highest rate whose latency percentile stays under the SLO: double from ``start_rate`` until a
    probe does not pass (or ``max_rate``), then bisect between the highest pass and the lowest other probe until
    they are within ``resolution`` of each other or ``refine_steps`` bisections are spent.

    A probe is a verdict of :func:`eks_inference.measure.repeats.judge`: ``pass``, ``fail``, ``unsure`` or
    ``untrusted`` (booleans are read as pass / fail). Only a pass counts as one: the search brackets what was
    shown, and the capacity's interval (:mod:`eks_inference.measure.capacity`) says how well.

    :param slo_p99_ms: the latency target (of ``percentile``).
    :param start_rate: first rate tried, default 10.
    :param max_rate: never go above it, default 100000.
    :param refine_steps: bisection steps after bracketing, default 3.
    :param min_rate: give up below it when even the start rate fails, default ``start_rate / 16``.
    :param resolution: stop bisecting once the bracket is narrower than this share of its lower end,
        default 0.05.
    :param percentile: the percentile the SLO applies to, default p99.
    """

    slo_p99_ms: float
    start_rate: float = 10.0
    max_rate: float = 100_000.0
    refine_steps: int = 3
    min_rate: float | None = None
    resolution: float = 0.05
    percentile: str = "p99"

    def __post_init__(self) -> None:
        if not self.slo_p99_ms > 0:
            raise ConfigError(f"--slo-p99-ms: {self.slo_p99_ms!r} must be positive, e.g. 100")
        if not 0 < self.start_rate <= self.max_rate:
            raise ConfigError(
                f"--search: start rate {self.start_rate:g} must be positive and <= --max-rate {self.max_rate:g}"
            )
        if self.refine_steps < 0:
            raise ConfigError(f"--search-steps: {self.refine_steps} must be >= 0")
        if not 0 < self.resolution < 1:
            raise ConfigError(f"--search-resolution: {self.resolution:g} must be in (0, 1), e.g. 0.05")
        if self.percentile not in SLO_PERCENTILES:
            raise ConfigError(f"--slo-percentile: {self.percentile!r} is not one of {', '.join(SLO_PERCENTILES)}")

    def next_rate(self, history: Sequence[tuple[float, bool | str]]) -> float | None:
        """The next rate to try given ``(rate, verdict)`` so far, or None when the search is over."""
        if not history:
            return self.start_rate
        seen = [(r, v is True or v == "pass") for r, v in history]
        passed = [r for r, ok in seen if ok]
        failed = [r for r, ok in seen if not ok]
        if not failed:
            last = max(passed)
            if last >= self.max_rate:
                return None
            return min(self.max_rate, last * 2)
        hi = min(failed)
        below = [r for r in passed if r < hi]
        if not below:
            floor = self.min_rate if self.min_rate is not None else self.start_rate / 16
            nxt = hi / 2
            return nxt if nxt >= floor else None
        lo = max(below)
        refinements = len(seen) - 1 - _bracketed_at(seen)
        if refinements >= self.refine_steps or (hi - lo) / lo <= self.resolution:
            return None
        return round((lo + hi) / 2, 3)


def _bracketed_at(history: Sequence[tuple[float, bool]]) -> int:
    """Index of the step after which a pass lay below a fail for the first time."""
    for i in range(len(history)):
        prefix = history[: i + 1]
        fails = [r for r, ok in prefix if not ok]
        if fails and any(ok and r < min(fails) for r, ok in prefix):
            return i
    return len(history) - 1


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """One ``loadtest run`` invocation.

    :param mode: open (rates) or closed (concurrencies; an optional single rate paces the users).
    :param arrival: open loop only; constant spacing (default, exactly ``rate × duration`` requests, the
        wrk2 way) or Poisson (independent users).
    :param rates: total requests/s per step; several make a sweep.
    :param concurrencies: total in-flight requests per step (closed loop).
    :param duration_s: measured seconds per step (after warm-up); exclusive with ``requests``.
    :param requests: measured requests per step, in total across clients.
    :param warmup_s: sent on the same schedule and excluded from statistics, default 5.
    :param timeout_s: per request, from its intended send time, default 30.
    :param payload_file: JSONL payloads; otherwise texts are generated from ``text_length`` and ``seed``.
    :param clients: parallel clients of this run (pods); each sends 1/clients of every rate and
        concurrency. Default 1.
    :param client_index: this client's index in 0..clients-1.
    :param run_id: groups the files of one run; the report merges files of the same run, target and step.
    :param search: find the highest rate under the SLO instead of a fixed sweep.
    :param slo_p99_ms: recorded for the report; required by ``search``.
    :param max_error_rate: a step with a larger error fraction fails the SLO, default 0.01.
    :param connections: connection pool limit; default the closed-loop concurrency, or ``0.5 s × rate``
        (at least 64, at most 1024) in open loop.
    :param max_lag_ms: the client is flagged behind schedule when its p99 send lag exceeds this (or a
        tenth of the SLO, when given, if that is larger). Default 10.
    :param start_at: epoch seconds to begin at, so parallel clients start together.
    :param capacity_fractions: instead of fixed rates, first measure the target's capacity (a closed loop
        of ``calibrate_concurrency`` for ``calibrate_s`` seconds after the warm-up), then sweep open-loop
        rates at these fractions of it; with ``search``, one fraction: the search's first rate. Default none.
    :param calibrate_concurrency: in-flight requests of that measurement, default 16.
    :param calibrate_s: its measured seconds, default 5.
    :param schedule: one open-loop step whose total rate follows these segments (steps and ramps) instead of
        fixed ``rates``; its duration is the schedule's, the first ``warmup_s`` of it unmeasured. Default none.
    :param sample_replicas: ask ``URL/info`` once a second during each step for the replicas the target reports
        (at most one request in flight, on a connection of its own); default off.
    :param model_ids: a family's member ids, hottest first; each request names one in Serve's model-id header, drawn
        with ``model_mix`` from ``seed``. Default none: the target is one model.
    :param model_mix: ``uniform`` (default) or ``zipf:S``.
    """

    url: str
    mode: Mode
    target: TargetInfo
    out: str
    run_id: str
    arrival: Arrival = Arrival.CONSTANT
    rates: tuple[float, ...] = ()
    concurrencies: tuple[int, ...] = ()
    duration_s: float | None = 30.0
    requests: int | None = None
    warmup_s: float = 5.0
    timeout_s: float = 30.0
    payload_file: str | None = None
    text_length: str = "uniform:8-64"
    inputs_per_request: int = 1
    seed: int = 0
    clients: int = 1
    client_index: int = 0
    search: SearchSpec | None = None
    slo_p99_ms: float | None = None
    max_error_rate: float = 0.01
    engine: Engine = Engine.FAST
    connections: int | None = None
    max_lag_ms: float = 10.0
    start_at: float | None = None
    capacity_fractions: tuple[float, ...] = ()
    calibrate_concurrency: int = 16
    calibrate_s: float = 5.0
    schedule: tuple[Segment, ...] = ()
    sample_replicas: bool = False
    repeats: int = 1
    budget_s: float | None = None
    drain_s: float = 0.0
    slo_percentile: str = "p99"
    model_ids: tuple[str, ...] = ()
    """A family's members to send requests to, hottest first; empty: the target is one model."""
    model_mix: str = "uniform"
    """How requests spread over ``model_ids`` (:mod:`eks_inference.loadgen.model_mix`), drawn from ``seed``."""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _RUN_ID_RE.match(self.run_id):
            raise ConfigError(f"--run-id: {self.run_id!r} is not valid; use letters, digits, '.', '_' or '-'")
        if self.mode is Mode.OPEN:
            if self.concurrencies:
                raise ConfigError("--concurrency/--concurrencies: only for --mode closed; use --rate/--rates "
                                  "for the open loop")
            if not self.rates and self.search is None and not self.capacity_fractions and not self.schedule:
                raise ConfigError("--mode open needs --rate R, --rates R1,R2,..., --capacity-fractions, --search, "
                                  "--schedule or --ramp")
        else:
            if not self.concurrencies:
                raise ConfigError("--mode closed needs --concurrency N or --concurrencies N1,N2,...")
            if len(self.rates) > 1:
                raise ConfigError("--rates: a closed loop takes at most one --rate (it paces the users)")
            if self.search is not None:
                raise ConfigError("--search: searches a rate, so it needs --mode open")
        parse_rates(",".join(repr(r) for r in self.rates) or "1", option="--rate")
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in self.concurrencies):
            raise ConfigError(f"--concurrencies: {list(self.concurrencies)} must be whole numbers >= 1")
        if (self.duration_s is None) == (self.requests is None):
            raise ConfigError("give exactly one of --duration S and --requests N")
        if self.duration_s is not None and not (0 < self.duration_s <= 86_400):
            raise ConfigError(f"--duration: {self.duration_s!r} must be in (0, 86400] seconds")
        if self.requests is not None and self.requests < self.clients:
            raise ConfigError(f"--requests: {self.requests!r} must be >= --clients ({self.clients})")
        if not 0 <= self.warmup_s <= 3600:
            raise ConfigError(f"--warmup: {self.warmup_s!r} must be in [0, 3600] seconds")
        if not 0 < self.timeout_s <= 3600:
            raise ConfigError(f"--timeout: {self.timeout_s!r} must be in (0, 3600] seconds")
        if self.inputs_per_request < 1:
            raise ConfigError(f"--inputs-per-request: {self.inputs_per_request} must be >= 1")
        if not 1 <= self.clients <= 1000:
            raise ConfigError(f"--clients: {self.clients} must be in 1..1000")
        if not 0 <= self.client_index < self.clients:
            raise ConfigError(f"--client-index: {self.client_index} must be in 0..{self.clients - 1} "
                              f"(--clients is {self.clients})")
        for c in self.concurrencies:
            if c < self.clients:
                raise ConfigError(f"--concurrencies: {c} is below --clients {self.clients}; every client needs "
                                  "at least one in-flight request")
        if self.search is not None and self.clients > 1:
            raise ConfigError("--search: each client would search on its own; run one client, or sweep "
                              "fixed --rates with several clients")
        if not 0 <= self.max_error_rate <= 1:
            raise ConfigError(f"--max-error-rate: {self.max_error_rate} must be in [0, 1], e.g. 0.01")
        if self.capacity_fractions:
            if self.search is not None and len(self.capacity_fractions) != 1:
                raise ConfigError("--capacity-fractions with --search: give one fraction, the search's first rate as "
                                  "a share of the capacity measured first, e.g. 0.5")
            if self.mode is not Mode.OPEN or self.rates:
                raise ConfigError("--capacity-fractions: sweeps open-loop rates of its own; drop --rate/--rates "
                                  "and --mode closed")
            if self.clients > 1:
                raise ConfigError("--capacity-fractions: each client would measure a different capacity; run one "
                                  "client, or sweep fixed --rates with several clients")
            if any(not 0 < f <= 10 for f in self.capacity_fractions):
                raise ConfigError(f"--capacity-fractions: {list(self.capacity_fractions)} must each be in (0, 10], "
                                  "e.g. 0.3,0.6,0.9,1.1")
            if not 1 <= self.calibrate_concurrency <= MAX_CONCURRENCY:
                raise ConfigError(f"--calibrate-concurrency: {self.calibrate_concurrency} must be in "
                                  f"1..{MAX_CONCURRENCY}")
            if not 0 < self.calibrate_s <= 3600:
                raise ConfigError(f"--calibrate-duration: {self.calibrate_s} must be in (0, 3600] seconds")
        if self.schedule:
            self._check_schedule()
        if self.connections is not None and self.connections < 1:
            raise ConfigError(f"--connections: {self.connections} must be >= 1")
        if not self.max_lag_ms > 0:
            raise ConfigError(f"--max-lag-ms: {self.max_lag_ms} must be positive")
        if self.slo_p99_ms is not None and not self.slo_p99_ms > 0:
            raise ConfigError(f"--slo-p99-ms: {self.slo_p99_ms} must be positive, e.g. 100")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or not 1 <= self.repeats <= 100:
            raise ConfigError(f"--repeats: {self.repeats!r} must be a whole number in 1..100, e.g. 3")
        if self.repeats > 1 and self.schedule:
            raise ConfigError("--repeats: a schedule is one step of its own, measured once; drop --repeats, or "
                              "sweep --rates")
        if self.budget_s is not None and not 0 <= self.budget_s <= 86_400:
            raise ConfigError(f"--budget: {self.budget_s:g} must be in [0, 86400] seconds, e.g. 300")
        if not 0 <= self.drain_s <= 600:
            raise ConfigError(f"--drain: {self.drain_s:g} must be in [0, 600] seconds, e.g. 1")
        if self.model_ids:
            check_ids(self.model_ids)
            parse_mix(self.model_mix)
        if self.slo_percentile not in SLO_PERCENTILES:
            raise ConfigError(f"--slo-percentile: {self.slo_percentile!r} is not one of "
                              f"{', '.join(SLO_PERCENTILES)}")

    def _check_schedule(self) -> None:
        if self.mode is not Mode.OPEN or self.rates or self.search is not None or self.capacity_fractions:
            raise ConfigError("--schedule/--ramp: the schedule is the load; drop --rate/--rates, --concurrency, "
                              "--search and --capacity-fractions")
        total = RateSchedule(self.schedule).total_s
        if self.requests is not None or self.duration_s is None or abs(self.duration_s + self.warmup_s - total) > 1e-6:
            raise ConfigError(f"--schedule/--ramp: the run lasts the schedule's {total:g} s; drop --duration and "
                              "--requests (--warmup counts its first seconds as unmeasured)")
        if self.warmup_s >= total:
            raise ConfigError(f"--warmup: {self.warmup_s:g} s leaves nothing of the {total:g} s schedule to measure; "
                              "lower it")

    def schedule_step(self) -> StepSpec:
        """The one step a schedule run makes: the schedule's mean as its rate, its duration after the warm-up."""
        sched = RateSchedule(self.schedule)
        mean = float(f"{sched.mean_rate:.4g}")  # a readable label; the schedule itself carries the exact rates
        return StepSpec(index=0, mode=Mode.OPEN, arrival=self.arrival, rate=mean, concurrency=None,
                        client_rate=mean / self.clients, client_concurrency=None,
                        duration_s=sched.total_s - self.warmup_s, requests=None, warmup_s=self.warmup_s,
                        schedule=self.schedule)

    def _share(self, total: int) -> int:
        base, rem = divmod(total, self.clients)
        return base + (1 if self.client_index < rem else 0)

    def step(self, index: int, *, rate: float | None = None, concurrency: int | None = None) -> StepSpec:
        requests = self._share(self.requests) if self.requests is not None else None
        if self.mode is Mode.OPEN:
            assert rate is not None
            return StepSpec(index=index, mode=self.mode, arrival=self.arrival, rate=rate, concurrency=None,
                            client_rate=rate / self.clients, client_concurrency=None,
                            duration_s=self.duration_s, requests=requests, warmup_s=self.warmup_s)
        assert concurrency is not None
        pace = self.rates[0] if self.rates else None
        return StepSpec(index=index, mode=self.mode, arrival=self.arrival, rate=pace, concurrency=concurrency,
                        client_rate=pace / self.clients if pace else None,
                        client_concurrency=self._share(concurrency), duration_s=self.duration_s,
                        requests=requests, warmup_s=self.warmup_s)

    def calibration_step(self) -> StepSpec:
        """The closed loop that measures capacity for ``capacity_fractions`` (not a step of the sweep)."""
        return StepSpec(index=-1, mode=Mode.CLOSED, arrival=self.arrival, rate=None,
                        concurrency=self.calibrate_concurrency, client_rate=None,
                        client_concurrency=self.calibrate_concurrency, duration_s=self.calibrate_s, requests=None,
                        warmup_s=self.warmup_s)

    def sweep(self) -> list[StepSpec]:
        """The fixed steps (empty for a search or a capacity sweep, whose steps depend on what they measure)."""
        if self.search is not None or self.capacity_fractions:
            return []
        if self.schedule:
            return [self.schedule_step()]
        if self.mode is Mode.OPEN:
            return [self.step(i, rate=r) for i, r in enumerate(self.rates)]
        return [self.step(i, concurrency=c) for i, c in enumerate(self.concurrencies)]

    def connection_limit(self, step: StepSpec) -> int:
        if self.connections is not None:
            return self.connections
        if step.mode is Mode.CLOSED:
            return step.client_concurrency or 1
        sched = step.client_schedule
        peak = max(max(s.rate_from, s.rate_to) for s in sched.segments) if sched else (step.client_rate or 1)
        return min(DEFAULT_MAX_CONNECTIONS, max(64, math.ceil(0.5 * peak)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mode"], d["arrival"], d["engine"] = self.mode.value, self.arrival.value, self.engine.value
        d["target"] = self.target.to_dict()
        d["schedule"] = [s.to_list() for s in self.schedule]
        return d

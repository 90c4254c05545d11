"""Open- and closed-loop load generation: schedules, warm-up, bounds, sweeps and the SLO search.

Open loop (what a fleet of independent users does): request *k* is due at a fixed time (constant
spacing or Poisson arrivals) whether or not earlier replies came back, and its latency runs from that
*intended* time. A server stall therefore shows up in every request that was due during it, instead of
in the one request that happened to be waiting (coordinated omission, as in wrk2). The client records
how late it actually sent each request. When that lag exceeds ``max_lag_ms`` at p99 (or a tenth of
the SLO when one is given, whichever is larger), when the step ends further behind than 2% of its
window, or when the client used 90% of its core, the step is flagged ``behind_schedule``: the client,
not only the server, shaped what was measured, and the step is not used for the SLO.

Closed loop (a fixed number of users, each waiting for its reply): latency runs from the actual send.
It answers "how fast at concurrency N", and with ``--rate`` pacing it reproduces the classic naive
tester, which under-reports stalls; both are useful, and they are labelled.

A schedule (``--schedule``/``--ramp``) is one open-loop step whose rate changes over time: send times come from
the schedule (:mod:`eks_inference.measure.schedule`), and each segment also gets statistics of its own, by the
intended send time of each request. With ``sample_replicas`` a :class:`~eks_inference.loadgen.replicas.
ReplicaSampler` asks the target's ``/info`` once a second during each step, beside the load.

Each loop is a class of its own (``_OpenLoopStep``, ``_ClosedLoopStep``) over one base that holds what they share:
the measuring window and its bounds, the recorder and counters, the abort rule, and how a step ends.
Everything runs on one event loop through callbacks; statistics go to :class:`StepRecorder`. Around each step,
client 0 reads the target's own metrics (:mod:`eks_inference.loadgen.server_metrics`); the other clients pause
while it does, so that all stay in step.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import gc
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from eks_inference.loadgen.client import Endpoint, ErrorKind, HttpClient, fetch_info, open_client, parse_endpoint
from eks_inference.loadgen.host import HostSampler, ServerOnHost, locate_server
from eks_inference.loadgen.model_mix import draw, parse_mix, request_headers
from eks_inference.loadgen.payloads import Payload
from eks_inference.loadgen.replicas import ReplicaSampler
from eks_inference.loadgen.run_config import RunConfig, SearchSpec, rates_from_capacity
from eks_inference.loadgen.server_metrics import StepReader
from eks_inference.measure.capacity import capacity_at_slo, capacity_text
from eks_inference.measure.contention import describe as describe_contention
from eks_inference.measure.repeats import judge, summarize_repeats
from eks_inference.measure.schedule import Segment
from eks_inference.measure.spec import Arrival, Mode, StepSpec
from eks_inference.measure.stats import StepRecorder, StepStats, decode, percentiles_us
from eks_inference.measure.steps import CLIENT_SATURATED_CPU, ClientStep, slo_verdict, summarize
from eks_inference.measure.working_set import step_working_set

ABORT_AFTER_S = 5.0
"""A step with connection errors and not one success for this long stops: the target is down."""
MONITOR_S = 0.5
LATE_START_S = 0.5
KNEE_EXTRA_STEPS = 4
KNEE_STEP_FACTOR = 1.15
"""A capacity sweep (with an SLO) whose last step still meets it goes on at +15% a step, at most 4 more times:
a closed-loop capacity estimate can be off by a fifth either way, and a sweep that never leaves the flat
part of the curve shows no knee."""
LAG_SHARE_OF_SLO = 0.1
"""With an SLO, send lag up to this share of it is tolerated (at least ``max_lag_ms``): a 15 ms hiccup on a
busy machine cannot move a verdict against 250 ms, but it is the whole story against 5 ms."""


class Progress(Protocol):
    def step_started(self, spec: StepSpec, *, planned_s: float | None, planned_requests: int | None) -> None: ...

    def step_update(self, *, elapsed_s: float, measured: int, ok: int, errors: int, in_flight: int) -> None: ...

    def step_finished(self, summary: Mapping[str, Any]) -> None: ...


class NullProgress:
    def step_started(self, spec: StepSpec, *, planned_s: float | None, planned_requests: int | None) -> None:
        pass

    def step_update(self, *, elapsed_s: float, measured: int, ok: int, errors: int, in_flight: int) -> None:
        pass

    def step_finished(self, summary: Mapping[str, Any]) -> None:
        pass


@dataclass(frozen=True, kw_only=True)
class StepOutcome:
    """One executed step: its statistics and how the client itself fared."""

    server_metrics: Mapping[str, Any] | None = None
    """The target's own account of the step (client 0 only; :mod:`eks_inference.loadgen.server_metrics`)."""
    spec: StepSpec
    stats: StepStats
    status: str
    note: str | None
    started_at: float
    ended_at: float
    client: Mapping[str, Any]
    segments: tuple[tuple[int, Segment, StepStats], ...] = ()
    """For a schedule: (index, the segment's total rates, this client's statistics of the requests due in it)."""
    replicas: tuple[Mapping[str, Any], ...] = ()
    """Per-second samples of the target's reported replicas (:mod:`eks_inference.loadgen.replicas`)."""

    def client_step(self, config: RunConfig, source: str = "(this run)") -> ClientStep:
        return ClientStep(source=source, run_id=config.run_id, client_index=config.client_index,
                          clients=config.clients, target=config.target, spec=self.spec, stats=self.stats,
                          client=self.client, status=self.status, server=self.server_metrics)


@dataclass(frozen=True, kw_only=True)
class RunOutcome:
    status: str
    error: str | None
    steps: tuple[StepOutcome, ...]
    started_at: float
    ended_at: float
    server_info: Mapping[str, Any] | None
    server_info_error: str | None
    notes: tuple[str, ...] = field(default_factory=tuple)
    calibration: Mapping[str, Any] | None = None


def _record(rec: StepRecorder, latency_s: float, at: float, inferences: int, kind: str | None,
            cold: bool | None = None) -> None:
    """One reply, completed at epoch ``at``: an answer (``kind`` None; ``cold`` as a family's replica marked it) or
    an error of that kind."""
    if kind is None:
        rec.record_ok(latency_s, at, inferences, cold)
    else:
        rec.record_error(kind, at)


class _Step(abc.ABC):
    """What both loops share: the measuring window and its bounds, the recorder and counters, the abort
    rule, the progress reports, and how a step ends and is summed up. A subclass decides only when requests
    go out and from which instant their latency counts; each step runs once. Single-threaded: every method
    runs on the event loop."""

    mono0: float
    epoch0: float
    t_start: float
    measure_start: float
    measure_end: float
    rec: StepRecorder
    done: asyncio.Future[None]
    monitor_handle: asyncio.TimerHandle
    host: HostSampler

    def __init__(self, client: HttpClient, spec: StepSpec, inferences: Sequence[int], *, max_lag_ms: float,
                 progress: Progress, start_at: float | None = None, server: ServerOnHost | None = None,
                 stop: asyncio.Event | None = None) -> None:
        self.client = client
        self.server = server
        self.stop = stop
        self.start_at = start_at
        self.late_s = 0.0
        self.spec = spec
        self.inferences = list(inferences)
        self.max_lag_ms = max_lag_ms
        self.progress = progress
        self.k = 0
        self.loop = asyncio.get_running_loop()
        self.stopping = False
        self.closed = False
        self.scheduling_done = False
        self.status = "complete"
        self.note: str | None = None
        self.measured_sent = 0
        self.in_flight = 0
        self.in_flight_measured = 0
        self.any_ok = False
        self.connection_errors = 0
        self.handles: list[asyncio.TimerHandle] = []
        self.window_end: float | None = None
        self.last_lag = 0.0

    # -- clock -------------------------------------------------------------------------------------
    def epoch(self, t: float) -> float:
        return self.epoch0 + (t - self.mono0)

    # -- what each loop decides ----------------------------------------------------------------------
    def _plan(self) -> None:
        """Fix where the measuring window starts, once the step's clock is set."""
        self.measure_start = self.t_start + self.spec.warmup_s

    @abc.abstractmethod
    def _start_sending(self) -> None:
        """Arm the first sends; from then on the loop keeps itself going until scheduling is done."""

    def _scheduled(self) -> int:
        """How many measured requests the step meant to send."""
        return self.measured_sent

    def _behind(self, *, lag_p99_ms: float, final_lag_ms: float, cpu: float, window_s: float) -> bool:
        """Whether the client, not only the server, shaped what was measured."""
        return False

    def _segments(self, now: float) -> tuple[tuple[int, Segment, StepStats], ...]:
        return ()

    def _window_s(self, now: float) -> float:
        if self.status == "complete" and self.window_end is not None and math.isfinite(self.window_end):
            return self.window_end - self.measure_start
        return max(min(now, self.measure_end) - self.measure_start, 1e-9)

    # -- shared send and completion path ---------------------------------------------------------------
    def _past_bound(self, t: float) -> bool:
        """For a measured send due at ``t``: whether the step already sent its requests or its window is over,
        in which case scheduling ends here."""
        if self.spec.requests is not None:
            if self.measured_sent >= self.spec.requests:
                self._finish_scheduling(t)
                return True
        elif t >= self.measure_end:
            self._finish_scheduling(self.measure_end)
            return True
        return False

    def _send(self, t: float, measured: bool) -> None:
        """Send the next payload; its latency counts from ``t``."""
        i = self.k % len(self.inferences)
        self.k += 1
        inf = self.inferences[i]
        self.in_flight += 1
        if measured:
            self.measured_sent += 1
            self.in_flight_measured += 1
        # Only measured requests count as waiting for a connection: the warm-up's are not among the step's requests.
        self.client.submit(i, self._reply_callback(t, measured, inf), counted=measured)

    def _reply_callback(self, t_start: float, measured: bool, inf: int) -> Callable[[int, str | None, float], None]:
        def done(status: int, kind: str | None, t_done: float) -> None:
            self._completed(t_start, measured, inf, kind, t_done)
        return done

    def _completed(self, t_start: float, measured: bool, inferences: int, kind: str | None, t_done: float) -> None:
        if self.closed:
            return
        self.in_flight -= 1
        if kind is None:
            self.any_ok = True
        elif kind == ErrorKind.CONNECTION.value:
            self.connection_errors += 1
        if measured:
            self.in_flight_measured -= 1
            self._record_measured(t_start, inferences, kind, t_done)
        if self.scheduling_done and self.in_flight == 0 and not self.done.done():
            self.done.set_result(None)

    def _record_measured(self, t_start: float, inferences: int, kind: str | None, t_done: float) -> float:
        """Record one measured reply; returns its completion time in epoch seconds."""
        at = self.epoch(t_done)
        _record(self.rec, t_done - t_start, at, inferences, kind, self.client.reply_cold)
        return at

    def _finish_scheduling(self, window_end: float | None) -> None:
        self.scheduling_done = True
        self.window_end = window_end
        if self.in_flight == 0 and not self.done.done():
            self.done.set_result(None)

    # -- monitor -----------------------------------------------------------------------------------
    def _monitor(self) -> None:
        if self.closed or self.done.done():
            return
        if self.stop is not None and self.stop.is_set():
            # asked to stop (SIGTERM): end like a cancellation, at the next tick even if the cancel was lost
            self.status = "interrupted"
            self.note = "interrupted; the results measured so far are kept"
            self.stopping = True
            self.done.set_result(None)
            return
        self.host.tick()
        now = self.loop.time()
        c = self.client.counters
        self.progress.step_update(elapsed_s=now - self.measure_start, measured=self.measured_sent,
                                  ok=self.rec.ok, errors=self.rec.errors, in_flight=c.in_flight)
        if now - self.t_start >= ABORT_AFTER_S and not self.any_ok and self.connection_errors:
            first = (c.first_error or {}).get(ErrorKind.CONNECTION.value, "")
            self.status = "aborted"
            self.note = (f"no successful response in {now - self.t_start:.0f} s and {self.connection_errors} "
                         f"connection errors; first: {first}")
            self.stopping = True
            self.done.set_result(None)
            return
        self.monitor_handle = self.loop.call_later(MONITOR_S, self._monitor)

    # -- driver ------------------------------------------------------------------------------------
    async def run(self) -> StepOutcome:
        spec, loop = self.spec, self.loop
        # Everything alive now lives for the whole step; without this, the collector walks it again and
        # again, pausing the loop for tens of milliseconds and bunching up the schedule. Done before the
        # clock starts: a full collection can itself take that long.
        gc.collect()
        gc.freeze()
        if self.start_at is not None:
            # After the collection, so that clients meeting at one instant also send their first request at it.
            wait = self.start_at - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self.late_s = max(0.0, time.time() - self.start_at)
        self.mono0, self.epoch0 = loop.time(), time.time()
        self.t_start = self.mono0 + 0.002
        self._plan()
        self.measure_end = self.measure_start + spec.duration_s if spec.duration_s is not None else math.inf
        self.window_end = None
        self.rec = StepRecorder(window_start=self.epoch(self.measure_start))
        self.done = loop.create_future()
        self.client.counters.reset_step()
        opened0 = self.client.counters.connections_opened
        cpu0, wall0 = time.process_time(), time.monotonic()
        self.host = HostSampler(server=self.server)
        self.progress.step_started(spec, planned_s=spec.duration_s, planned_requests=spec.requests)
        interrupted = False
        self._start_sending()
        self.monitor_handle = loop.call_later(MONITOR_S, self._monitor)
        try:
            await self.done
        except asyncio.CancelledError:
            interrupted = True
            self.status = "interrupted"
            self.note = "interrupted; the results measured so far are kept"
        if self.status == "interrupted":
            interrupted = True
        self.stopping = True
        for h in self.handles:
            h.cancel()
        self.monitor_handle.cancel()
        if self.status == "aborted":
            drain_until = loop.time() + 2.0
            while self.in_flight and loop.time() < drain_until:
                await asyncio.sleep(0.05)
        self.closed = True
        now = loop.time()
        ended = self.epoch(now)
        window_s = self._window_s(now)
        stats = self.rec.finish(window_s=window_s, unfinished=self.in_flight_measured)
        wall = max(time.monotonic() - wall0, 1e-9)
        lag_p99_ms = percentiles_us(decode(stats.lag_hist))["p99"] / 1000.0
        c = self.client.counters
        final_lag_ms = self.last_lag * 1000.0
        cpu = (time.process_time() - cpu0) / wall
        client_info = {
            "cpu_utilization": round(cpu, 4),
            "behind_schedule": self._behind(lag_p99_ms=lag_p99_ms, final_lag_ms=final_lag_ms, cpu=cpu,
                                            window_s=window_s),
            "max_lag_ms": self.max_lag_ms,
            "lag_p99_ms": lag_p99_ms,
            "final_lag_ms": final_lag_ms,
            "scheduled": self._scheduled(),
            "sent": self.measured_sent,
            "connection_limit": self.client.limit,
            "connections_opened": c.connections_opened - opened0,
            "max_in_flight": c.max_in_flight,
            "waited_for_connection": c.waited_for_connection,
            "first_error": dict(c.first_error or {}),
            "host": self.host.finish(),
        }
        outcome = StepOutcome(spec=spec, stats=stats, status=self.status, note=self.note,
                              started_at=self.epoch(self.t_start), ended_at=ended, client=client_info,
                              segments=self._segments(now))
        if interrupted:
            raise _Interrupted(outcome)
        return outcome


class _OpenLoopStep(_Step):
    """Request *k* is due at a fixed intended time (constant spacing, Poisson arrivals or a rate schedule)
    whether or not earlier replies came back, and its latency runs from that time: a stall counts in every
    request due during it (no coordinated omission). How late each request actually went out is recorded as
    lag, and too much of it flags the step ``behind_schedule``."""

    def __init__(self, client: HttpClient, spec: StepSpec, inferences: Sequence[int], *, seed: int,
                 max_lag_ms: float, progress: Progress, start_at: float | None = None,
                 server: ServerOnHost | None = None, stop: asyncio.Event | None = None) -> None:
        super().__init__(client, spec, inferences, max_lag_ms=max_lag_ms, progress=progress, start_at=start_at,
                         server=server, stop=stop)
        self.rng = random.Random(seed * 1_000_003 + spec.index)
        self.sched = spec.client_schedule
        self._u = 0.0
        self.seg_recs: list[StepRecorder] = []
        self.measured_range: tuple[int, int | None] | None = None
        self.n_sched = 0
        self.next_t = 0.0

    def _plan(self) -> None:
        """A constant rate without a schedule counts sends, not seconds: send ``n`` is due ``n / rate`` after
        the start, and the window is the sends from ``first`` to ``end`` (:meth:`StepSpec.constant_schedule`),
        so every client measures exactly its share however its clock drifts."""
        spec = self.spec
        if spec.arrival is Arrival.CONSTANT and self.sched is None:
            assert spec.client_rate
            self.measured_range = spec.constant_schedule()
            self.measure_start = self.t_start + self.measured_range[0] / spec.client_rate
        else:
            super()._plan()
        if self.sched is not None:
            self.seg_recs = [StepRecorder(window_start=self.epoch(max(self.t_start + a, self.measure_start)))
                             for a in self.sched.boundaries[:-1]]

    def _gap(self) -> float:
        assert self.spec.client_rate
        return self.rng.expovariate(self.spec.client_rate)

    def _scheduled_at(self, n: int) -> float:
        """When send ``n`` of a schedule is due: Λ⁻¹(n) for constant spacing, Λ⁻¹ of the running sum of unit
        exponential gaps for Poisson arrivals; the schedule's end once it holds no more sends."""
        assert self.sched is not None
        if self.spec.arrival is Arrival.CONSTANT:
            x = float(n)
        else:
            self._u += self.rng.expovariate(1.0)
            x = self._u
        at = self.sched.time_at(x)
        return self.t_start + (self.sched.total_s if at is None else at)

    def _advance(self) -> None:
        self.n_sched += 1
        if self.sched is not None:
            self.next_t = self._scheduled_at(self.n_sched)
        elif self.spec.arrival is Arrival.CONSTANT:
            assert self.spec.client_rate
            self.next_t = self.t_start + self.n_sched / self.spec.client_rate
        else:
            self.next_t += self._gap()

    def _start_sending(self) -> None:
        if self.sched is not None:
            self.next_t = self._scheduled_at(0)
        else:
            self.next_t = self.t_start if self.spec.arrival is Arrival.CONSTANT else self.t_start + self._gap()
        self.handles = [self.loop.call_at(self.next_t, self._tick)]

    def _tick(self) -> None:
        if self.stopping or self.scheduling_done:
            return
        loop, spec, rec = self.loop, self.spec, self.rec
        now = loop.time()
        while self.next_t <= now:
            t = self.next_t
            if self.measured_range is not None:
                first, end = self.measured_range
                measured = self.n_sched >= first
                if end is not None and self.n_sched >= end:
                    self._finish_scheduling(t if spec.requests is not None else self.measure_end)
                    return
            elif (measured := t >= self.measure_start) and self._past_bound(t):
                return
            if measured:
                self.last_lag = now - t
                rec.record_lag(self.last_lag)
            self._send(t, measured)
            self._advance()
            now = loop.time()
        self.handles = [loop.call_at(self.next_t, self._tick)]

    def _record_measured(self, t_start: float, inferences: int, kind: str | None, t_done: float) -> float:
        at = super()._record_measured(t_start, inferences, kind, t_done)
        if self.seg_recs:
            seg = self.seg_recs[self.sched.segment_of(t_start - self.t_start)]  # type: ignore[union-attr]
            _record(seg, t_done - t_start, at, inferences, kind)
        return at

    def _scheduled(self) -> int:
        spec = self.spec
        if self.measured_range is not None and self.measured_range[1] is not None:
            return self.measured_range[1] - self.measured_range[0]
        if spec.requests is not None:
            return spec.requests
        return round((spec.client_rate or 0) * (spec.duration_s or 0))

    def _behind(self, *, lag_p99_ms: float, final_lag_ms: float, cpu: float, window_s: float) -> bool:
        # A client that cannot sustain the rate ends the step further behind than it began, however
        # large the tail it inflated: a final lag above 2% of the window is a rate it did not send.
        # And a client using all of its core delays its own reading of replies, which no send lag shows.
        return (lag_p99_ms > self.max_lag_ms or final_lag_ms > max(self.max_lag_ms, 20.0 * window_s)
                or cpu >= CLIENT_SATURATED_CPU)

    def _segments(self, now: float) -> tuple[tuple[int, Segment, StepStats], ...]:
        if self.sched is None:
            return ()
        bounds = self.sched.boundaries
        segments = []
        for i, seg_rec in enumerate(self.seg_recs):
            start = max(self.t_start + bounds[i], self.measure_start)
            end = min(self.t_start + bounds[i + 1], now)
            if end <= start:
                continue  # all of it warm-up, or never reached
            segments.append((i, self.spec.schedule[i], seg_rec.finish(window_s=end - start)))
        return tuple(segments)


class _ClosedLoopStep(_Step):
    """``client_concurrency`` users, each sending its next request when its reply comes back (no sooner than
    its pace with ``client_rate``); latency runs from the actual send. Never behind schedule: it has none."""

    def __init__(self, client: HttpClient, spec: StepSpec, inferences: Sequence[int], *, max_lag_ms: float,
                 progress: Progress, start_at: float | None = None, server: ServerOnHost | None = None,
                 stop: asyncio.Event | None = None) -> None:
        super().__init__(client, spec, inferences, max_lag_ms=max_lag_ms, progress=progress, start_at=start_at,
                         server=server, stop=stop)
        self.pace_interval = 0.0

    def _start_sending(self) -> None:
        users = self.spec.client_concurrency or 1
        if self.spec.client_rate:
            self.pace_interval = users / self.spec.client_rate
        spread = self.pace_interval / users if self.pace_interval else 0.0
        for u in range(users):
            self.handles.append(self.loop.call_at(self.t_start + u * spread, self._issue))

    def _issue(self) -> None:
        if self.stopping or self.scheduling_done:
            return
        now = self.loop.time()
        measured = now >= self.measure_start - 1e-6  # call_at may fire a clock tick early
        if measured and self._past_bound(now):
            return
        self._send(now, measured)

    def _reply_callback(self, t_send: float, measured: bool, inf: int) -> Callable[[int, str | None, float], None]:
        def done(status: int, kind: str | None, t_done: float) -> None:
            self._completed(t_send, measured, inf, kind, t_done)
            if self.stopping or self.scheduling_done:
                return
            if self.pace_interval:
                nxt = t_send + self.pace_interval
                if nxt > t_done:
                    self.handles.append(self.loop.call_at(nxt, self._issue))
                    if len(self.handles) > 4096:
                        self.handles = [h for h in self.handles if not h.cancelled() and h.when() > t_done]
                    return
            self._issue()
        return done

    def _window_s(self, now: float) -> float:
        """A step bounded by a request count ends with its last measured reply, not at a set time."""
        if self.spec.requests is not None and self.status == "complete":
            return max(self.rec.last_completion - self.rec.window_start, 1e-9)
        return super()._window_s(now)


def _new_step(client: HttpClient, spec: StepSpec, inferences: Sequence[int], *, seed: int, max_lag_ms: float,
              progress: Progress, start_at: float | None, server: ServerOnHost | None = None,
              stop: asyncio.Event | None = None) -> _Step:
    """The step's loop, chosen by its mode: the one place where open and closed part ways."""
    if spec.mode is Mode.OPEN:
        return _OpenLoopStep(client, spec, inferences, seed=seed, max_lag_ms=max_lag_ms, progress=progress,
                             start_at=start_at, server=server, stop=stop)
    return _ClosedLoopStep(client, spec, inferences, max_lag_ms=max_lag_ms, progress=progress, start_at=start_at,
                           server=server, stop=stop)


CALIBRATION_TRIES = 3
"""How many times the closed-loop capacity measurement is taken while the host is contended."""


class _Interrupted(Exception):
    def __init__(self, outcome: StepOutcome) -> None:
        super().__init__("interrupted")
        self.outcome = outcome


async def _probe(client: HttpClient, timeout_s: float) -> tuple[int, str | None, str | None]:
    """Send one unrecorded request: (status, error kind, detail) — to fail fast on a wrong URL."""
    fut: asyncio.Future[tuple[int, str | None]] = asyncio.get_running_loop().create_future()

    def done(status: int, kind: str | None, t_done: float) -> None:
        if not fut.done():
            fut.set_result((status, kind))

    client.submit(0, done, counted=False)
    try:
        status, kind = await asyncio.wait_for(fut, timeout_s + 1.0)
    except TimeoutError:
        return 0, ErrorKind.TIMEOUT.value, f"no response within {timeout_s:g} s"
    detail = (client.counters.first_error or {}).get(kind or "", None) if kind else None
    return status, kind, detail


async def _with_samples(outcome: StepOutcome, sampler: ReplicaSampler | None,
                        task: asyncio.Task[list[dict[str, Any]]] | None) -> StepOutcome:
    """The step's outcome with the replica samples taken while it ran."""
    if sampler is None or task is None:
        return outcome
    sampler.stop()
    try:
        samples = await asyncio.wait_for(asyncio.shield(task), timeout=2.0)
    except (TimeoutError, asyncio.CancelledError):
        task.cancel()
        samples = sampler.samples
    return dataclasses.replace(outcome, replicas=tuple(samples))


def step_passes(outcome: StepOutcome, config: RunConfig) -> tuple[bool, str]:
    assert config.search is not None
    summary = summarize([outcome.client_step(config)])
    return slo_verdict(summary, slo_p99_ms=config.search.slo_p99_ms, max_error_rate=config.max_error_rate)


class _Stop(Exception):
    """The run cannot go on; its status and error are already set."""


Measure = Callable[[StepSpec], Awaitable[StepOutcome]]


def _round_order(config: RunConfig, n: int, round_no: int) -> list[int]:
    """The order of the ``n`` steps in round ``round_no``: as planned in a single round; with repeats, one order
    shuffled from the run's seed, rotated by one place each round, so that every step takes every position in
    turn (a slow drift lands on all of them alike) and the same command plays the same orders."""
    order = list(range(n))
    if config.repeats > 1 and n:
        random.Random(config.seed).shuffle(order)
        k = round_no % n
        order = order[k:] + order[:k]
    return order


async def _sweep(config: RunConfig, planned: list[StepSpec], measure: Measure,
                 combined: Callable[[int], dict[str, Any]], left_for: Callable[[float], bool], step_s: float,
                 notes: list[str]) -> None:
    """Fixed steps, ``config.repeats`` rounds in shuffled orders; then each step whose repeats disagree or were
    contended once more (with ``budget_s``: while it lasts, at most ``repeats`` more times each)."""
    for round_no in range(config.repeats):
        order = _round_order(config, len(planned), round_no)
        if config.repeats > 1:
            notes.append(f"round {round_no + 1} of {config.repeats} (order from seed {config.seed}): "
                         + ", ".join(planned[i].label for i in order))
        pos = 0
        while pos < len(order):
            i = order[pos]
            pos += 1
            spec = dataclasses.replace(planned[i], repeat=round_no)
            result = await measure(spec)
            if (round_no == 0 and config.capacity_fractions and config.slo_p99_ms is not None
                    and i == len(planned) - 1 and len(planned) - len(config.capacity_fractions) < KNEE_EXTRA_STEPS):
                summary = summarize([result.client_step(config)])
                passed, _ = slo_verdict(summary, slo_p99_ms=config.slo_p99_ms, max_error_rate=config.max_error_rate,
                                        percentile=config.slo_percentile)
                if passed and not result.client.get("behind_schedule"):
                    rate = rates_from_capacity((spec.rate or 0.0) * KNEE_STEP_FACTOR, (1.0,))[0]
                    planned.append(config.step(len(planned), rate=rate))
                    order.append(len(planned) - 1)
                    notes.append(f"{spec.label} still met the SLO; going on at {rate:g} req/s to find the knee")
    if config.repeats < 2:
        return
    if config.clients > 1:
        # Each client would judge its own share and measure again on its own: the clients would part ways.
        notes.append("several clients: steps whose repeats disagree are flagged in the report, not measured again")
        return
    extra = dict.fromkeys(range(len(planned)), 0)
    most = config.repeats if config.budget_s is not None else 1
    while True:
        figures = {i: combined(i) for i in range(len(planned)) if extra[i] < most}
        flagged = [i for i, c in figures.items() if c["unstable"] or c["repeats_excluded"] or c["contended"]]
        if not flagged:
            break
        if not left_for(step_s):
            for i in flagged:
                notes.append(f"{planned[i].label}: {_flag_reason(figures[i])}; the budget is spent, so it stays "
                             "flagged")
            break
        i = flagged[0]
        extra[i] += 1
        notes.append(f"{planned[i].label}: measuring again ({_flag_reason(figures[i])})")
        await measure(dataclasses.replace(planned[i], repeat=config.repeats + extra[i] - 1))


CONTENDED_RETRIES = 2
"""How many more times than ``--repeats`` a search probe measured on a contended host is measured again (each
after a pause of one step), before the search gives up on it."""


def _crowding(c: Mapping[str, Any]) -> tuple[bool, bool]:
    """Of a combined step: (was any repeat measured on a contended host, was the latest one)."""
    values = sorted(c.get("repeat_values") or [], key=lambda r: r.get("repeat") or 0)
    if not values:
        return bool(c.get("contended")), bool(c.get("contended"))
    return any(r.get("contended") for r in values), bool(values[-1].get("contended"))


def _flag_reason(c: Mapping[str, Any]) -> str:
    if c["unstable"]:
        return str(c["unstable_reason"])
    if c["repeats_excluded"]:
        return f"repeat {c['repeats_excluded'][0]['repeat']}: {c['repeats_excluded'][0]['why']}"
    return "every repeat was measured while the host was contended"


async def _search(config: RunConfig, search: SearchSpec, measure: Measure,
                  combined: Callable[[int], dict[str, Any]], left_for: Callable[[float], bool], step_s: float,
                  notes: list[str], pause: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """The SLO search with confidence: each probe measured ``repeats`` times and judged on its interval; an unsure,
    unstable or contended probe is measured again while the budget lasts (at most ``repeats`` more times, and
    :data:`CONTENDED_RETRIES` more for a contended one, each after a ``pause`` of one step)."""
    history: list[tuple[float, str]] = []
    index = 0
    while True:
        rate = search.next_rate(history)
        if rate is None:
            break
        if not left_for(step_s * config.repeats):
            notes.append(f"search stopped before {rate:g} req/s: the budget of {config.budget_s:g} s is spent")
            break
        spec = config.step(index, rate=rate)
        for r in range(config.repeats):
            await measure(dataclasses.replace(spec, repeat=r))
        c = combined(index)
        verdict, why = judge(c, slo_ms=search.slo_p99_ms, max_error_rate=config.max_error_rate,
                             percentile=search.percentile)
        extra = 0
        # A fail shown with confidence stays one whatever another measurement says: only the rest is measured
        # again. A probe the host crowded is measured again after a pause, and more often: a neighbour that came
        # and went (a build, a backup) must not become the capacity's boundary, nor end the search.
        while (verdict != "fail" and (verdict in ("unsure", "untrusted") or c["unstable"]
                                      or (c["repeats_excluded"] and c.get("repeats", 1) < config.repeats))
               and extra < config.repeats + (CONTENDED_RETRIES if _crowding(c)[0] else 0)
               and left_for(step_s * (2 if _crowding(c)[1] else 1))):
            crowded = _crowding(c)[1]
            notes.append(f"search {spec.label}: {verdict}{' and unstable' if c['unstable'] else ''} ({why}); "
                         + (f"pausing {step_s:g} s for the host to quieten, then measuring it again" if crowded
                            else "measuring it again"))
            if crowded:
                await pause(step_s)
            await measure(dataclasses.replace(spec, repeat=config.repeats + extra))
            extra += 1
            c = combined(index)
            verdict, why = judge(c, slo_ms=search.slo_p99_ms, max_error_rate=config.max_error_rate,
                                 percentile=search.percentile)
        history.append((rate, verdict))
        notes.append(f"search {spec.label}: {verdict} ({why})")
        if c["contended"]:
            notes.append(f"search stopped at {spec.label}: every measurement of it was taken while the host was "
                         "contended (the machine, not the server, shaped it); measure on a quieter machine")
            break
        if c["behind_schedule"]:
            notes.append(f"search stopped at {spec.label}: the client fell behind its schedule; "
                         "use more clients to measure higher rates")
            break
        index += 1
    if not history:
        return
    cap = capacity_at_slo([combined(i) for i in range(len(history))],
                          slo_ms=search.slo_p99_ms, max_error_rate=config.max_error_rate,
                          percentile=search.percentile, nodes=config.target.nodes)
    notes.append(f"search: {capacity_text(cap)}")


async def _working_set(config: RunConfig, endpoint: Endpoint) -> dict[str, Any]:
    """A family step's working set for ``plan``: the mix, and (client 0) the target's ``/info`` at the step's end."""
    info = (await fetch_info(endpoint, timeout_s=min(5.0, config.timeout_s)))[0] if config.client_index == 0 else None
    return step_working_set(info, mix=parse_mix(config.model_mix).label, members=len(config.model_ids))


async def run(
    config: RunConfig,
    payloads: Sequence[Payload],
    *,
    progress: Progress | None = None,
    on_step: Callable[[RunOutcome], None] | None = None,
    server_metrics: bool = True,
    stop: asyncio.Event | None = None,
) -> RunOutcome:
    """Execute the whole run; never raises for target trouble, it reports it in the outcome.

    :param server_metrics: read the target's metrics around each step (client 0) and pause with it (the
        others); default on.
    :param stop: once set, the step under way ends as interrupted at its next monitor tick and no other starts:
        the run's own stop request, which no cancellation race can lose.
    """
    progress = progress or NullProgress()
    endpoint = parse_endpoint(config.url)
    started = time.time()
    server = locate_server(endpoint.host, endpoint.port)
    info, info_error = await fetch_info(endpoint, timeout_s=min(5.0, config.timeout_s))
    reader = StepReader(info, reads=config.client_index == 0, pauses=config.clients > 1) if server_metrics else None
    inferences = [len(p.inputs) for p in payloads]
    bodies = [p.body for p in payloads]
    headers = None
    if config.model_ids:  # a family: request k names the k-th id of a seeded draw (each client its own)
        ids = draw(parse_mix(config.model_mix), config.model_ids, seed=config.seed * 7919 + config.client_index)
        inferences = [len(payloads[k % len(payloads)].inputs) for k in range(len(ids))]
        bodies = [payloads[k % len(payloads)].body for k in range(len(ids))]
        headers = request_headers(ids)
    steps: list[StepOutcome] = []
    notes: list[str] = []
    status, error = "complete", None
    first_limit = config.connection_limit(config.sweep()[0]) if config.sweep() else 64
    client = open_client(config.engine, endpoint, bodies, limit=first_limit, timeout_s=config.timeout_s,
                         headers=headers)

    calibration: dict[str, Any] | None = None

    async def pause(seconds: float) -> None:
        """Sleep, but no longer than until the run is asked to stop."""
        if stop is None:
            await asyncio.sleep(seconds)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)

    def outcome() -> RunOutcome:
        return RunOutcome(status=status, error=error, steps=tuple(steps), started_at=started, ended_at=time.time(),
                          server_info=info, server_info_error=info_error, notes=tuple(notes),
                          calibration=calibration)

    try:
        p_status, p_kind, p_detail = await _probe(client, config.timeout_s)
        if p_kind in (ErrorKind.CONNECTION.value, ErrorKind.TIMEOUT.value, ErrorKind.PROTOCOL.value) or p_status in (
                404, 405):
            why = p_detail or (f"HTTP {p_status}" if p_status else p_kind)
            hint = " (is the URL the model's base, e.g. http://HOST:8000/MODEL?)" if p_status in (404, 405) else ""
            status, error = "aborted", f"cannot use {endpoint.predict_url}: {why}{hint}"
            return outcome()
        if p_kind is not None:
            notes.append(f"first request answered {p_kind} ({p_detail}); measuring anyway")
        slo = config.search.slo_p99_ms if config.search is not None else config.slo_p99_ms
        lag_limit_ms = max(config.max_lag_ms, LAG_SHARE_OF_SLO * slo) if slo else config.max_lag_ms
        planned = config.sweep()
        start_at = config.start_at
        if config.capacity_fractions:
            cal = config.calibration_step()
            client.limit = config.connection_limit(cal)
            tries: list[tuple[StepOutcome, dict[str, Any]]] = []
            # A contended measurement would start (and cap) the search low: measure it again, twice at most.
            while len(tries) < CALIBRATION_TRIES and (not tries or tries[-1][1].get("contended")):
                try:
                    measured = await _new_step(client, cal, inferences, seed=config.seed, max_lag_ms=lag_limit_ms,
                                               progress=progress, start_at=start_at, server=server, stop=stop).run()
                except _Interrupted:
                    status, error = "interrupted", "interrupted while measuring capacity; nothing kept"
                    return outcome()
                start_at = None
                tries.append((measured, summarize([measured.client_step(config)])))
                progress.step_finished(tries[-1][1])
                if tries[-1][1].get("contended") and len(tries) < CALIBRATION_TRIES:
                    notes.append("capacity measured on a contended host "
                                 f"({describe_contention(tries[-1][1].get('contention') or {})}); pausing "
                                 f"{config.calibrate_s:g} s for the host to quieten, then measuring it again")
                    await pause(config.calibrate_s)
            clean = [t for t in tries if not t[1].get("contended")]
            measured, cal_summary = max(clean or tries, key=lambda t: t[1]["throughput_rps"])
            if not clean:
                notes.append(f"capacity was measured on a contended host {len(tries)} times: the search starts from "
                             "the best of them and may start low")
            capacity = cal_summary["throughput_rps"]
            if measured.status != "complete" or not capacity:
                status, error = "aborted", (f"capacity measurement at concurrency {config.calibrate_concurrency}: "
                                            f"{measured.note or 'no successful responses'}")
                return outcome()
            rates = rates_from_capacity(capacity, config.capacity_fractions)
            planned = [config.step(i, rate=r) for i, r in enumerate(rates)] if config.search is None else []
            calibration = {
                "concurrency": config.calibrate_concurrency, "duration_s": config.calibrate_s,
                "warmup_s": config.warmup_s, "throughput_rps": capacity,
                "inferences_per_s": cal_summary["inferences_per_s"], "latency_ms": cal_summary["latency_ms"],
                "errors": cal_summary["errors"], "fractions": list(config.capacity_fractions), "rates": list(rates),
                "measurements": len(tries), "contended": not clean,
            }
            what = "searching from" if config.search is not None else "sweeping"
            notes.append(f"capacity: {capacity:,.1f} req/s at concurrency {config.calibrate_concurrency} (closed loop, "
                         f"{config.calibrate_s:g} s); {what} {', '.join(f'{r:g}' for r in rates)} req/s "
                         f"({', '.join(f'{f:g}' for f in config.capacity_fractions)} × that)")
        t_run0 = time.monotonic()
        step_s = (config.duration_s or 0.0) + config.warmup_s + config.drain_s
        budget_end = None if config.budget_s is None else t_run0 + config.budget_s
        percentile = config.search.percentile if config.search is not None else config.slo_percentile

        def left_for(seconds: float) -> bool:
            """Whether the budget has room for another measurement of about ``seconds``."""
            return budget_end is None or time.monotonic() + seconds <= budget_end

        def combined(index: int) -> dict[str, Any]:
            """Step ``index``'s repeats so far, as one figure (:func:`summarize_repeats`)."""
            mine = [[s.client_step(config)] for s in steps if s.spec.index == index]
            return summarize_repeats(mine, percentile=percentile)

        async def measure(spec: StepSpec) -> StepOutcome:
            """One measurement of one step: load, then the server's account and the replica samples; raises
            :class:`_Stop` when the run cannot go on (interrupted, aborted, nothing answered)."""
            nonlocal start_at, status, error
            client.limit = config.connection_limit(spec)
            if stop is not None and stop.is_set():
                status, error = "interrupted", "interrupted; the results measured so far are kept"
                raise _Stop
            step = _new_step(client, spec, inferences, seed=config.seed, max_lag_ms=lag_limit_ms, progress=progress,
                             start_at=start_at, server=server, stop=stop)
            if reader is not None:
                await reader.begin(settle=start_at is None)
            sampler = ReplicaSampler(endpoint.info_url) if config.sample_replicas else None
            sampling = asyncio.create_task(sampler.run()) if sampler is not None else None
            try:
                result = await step.run()
            except _Interrupted as e:
                steps.append(await _with_samples(e.outcome, sampler, sampling))
                status, error = "interrupted", "interrupted; the results measured so far are kept"
                raise _Stop from None
            result = await _with_samples(result, sampler, sampling)
            if reader is not None:
                result = dataclasses.replace(result, server_metrics=await reader.finish())
            if config.model_ids and result.stats.cold_hist is not None:
                result = dataclasses.replace(result, stats=dataclasses.replace(
                    result.stats, working_set=await _working_set(config, endpoint)))
            if start_at is not None and step.late_s > LATE_START_S:
                notes.append(f"started {step.late_s:.1f} s after the common start time; the clients' measuring "
                             "windows overlap less")
            start_at = None
            steps.append(result)
            progress.step_finished(summarize([result.client_step(config)]))
            if result.status != "complete":
                status, error = "aborted", f"step {spec.label}: {result.note}"
                raise _Stop
            if result.stats.ok == 0:
                first = "; ".join(f"{k}: {v}" for k, v in result.client.get("first_error", {}).items())
                status, error = "aborted", f"step {spec.label}: no successful responses ({first or 'no details'})"
                raise _Stop
            if on_step is not None:
                on_step(outcome())
            if config.drain_s:
                await pause(config.drain_s)
            return result

        try:
            if config.search is not None:
                search = config.search
                if calibration is not None:
                    search = dataclasses.replace(search, start_rate=calibration["rates"][0],
                                                 max_rate=max(search.max_rate, calibration["rates"][0]))
                await _search(config, search, measure, combined, left_for, step_s, notes, pause=pause)
            else:
                await _sweep(config, planned, measure, combined, left_for, step_s, notes)
        except _Stop:
            return outcome()
        return outcome()
    finally:
        await client.aclose()
        gc.unfreeze()

"""The server's side of a load-test step: its Prometheus metrics read before and after the step.

The target's ``/info`` names the Prometheus endpoints of every node of its Ray cluster (``metrics_urls``; in the
cluster the pods' metrics port, locally one endpoint on 127.0.0.1) and how often Ray processes hand their
metrics to those endpoints (``metrics_report_interval_s``). One client per target (client 0) reads them all at
the start and at the end of each step; the step's ``server_metrics`` are the differences:

* ``requests``: predict requests the replicas handled (Serve's ``ray_serve_deployment_request_counter_total``,
  route ``…/predict``), and ``responses`` by HTTP status (``ray_serve_num_http_requests_total``, POST);
* ``forwards`` and ``mean_batch_size`` (real inputs per forward), ``padding_ratio`` (token positions computed on
  padding);
* ``queue_ms`` and ``model_ms``: per request, the mean wait from admission to its forward and the mean time in
  it; the client's mean latency minus both is the network, proxy and HTTP handling (the report's split). Means
  come from the replica's exact counters, never from histogram sums (Ray rebuilds those from bucket midpoints);
* ``replicas`` at the start and end (Serve's healthy-replica gauge).

Counters are differenced per series (a series that appears during the step counts from zero; one that
disappears, a replica that stopped, is noted: what it served after the first scrape is lost). Metrics reach an
endpoint up to one report interval after they are recorded, so the end of a step is read only once they have
settled: after one interval, then until two reads agree (bounded). Every client pauses as long between steps,
so that the clients of a run stay in step. A target whose endpoints cannot be read is recorded as such
(``status: unreachable`` with the reason), never as zeros.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eks_inference import metric_names as names

DEFAULT_INTERVAL_S = 10.0
"""Ray's own default report interval, assumed when the target does not say."""
SETTLE_MARGIN_S = 0.5
MAX_SETTLE_INTERVALS = 3.0
SCRAPE_TIMEOUT_S = 5.0

SeriesKey = tuple[str, frozenset[tuple[str, str]]]


@dataclass(frozen=True)
class Snapshot:
    """Every sample of the target's endpoints at one time (``at``, epoch s), keyed by name and labels."""

    at: float
    samples: Mapping[SeriesKey, float]
    errors: tuple[str, ...] = ()

    def select(self, name: str, **labels: str) -> dict[SeriesKey, float]:
        want = set(labels.items())
        return {k: v for k, v in self.samples.items() if k[0] == name and want <= k[1]}


def parse_exposition(text: str) -> dict[SeriesKey, float]:
    """Prometheus text exposition → ``{(sample name, labels): value}`` (the client library's own parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[SeriesKey, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = float(s.value)
    return out


def target_endpoints(info: Mapping[str, Any] | None) -> tuple[list[str], float | None, str | None]:
    """(metrics URLs, report interval s, why there are none) from the target's ``/info`` document."""
    if not info:
        return [], None, "the target's /info could not be read"
    urls = [u for u in (info.get("metrics_urls") or []) if isinstance(u, str) and u]
    if not urls and isinstance(info.get("metrics_url"), str):
        urls = [info["metrics_url"]]
    interval = info.get("metrics_report_interval_s")
    interval = float(interval) if isinstance(interval, int | float) and interval > 0 else None
    if not urls:
        why = info.get("metrics_error") or "its /info names no metrics endpoint (metrics_url)"
        return [], interval, f"the target exports no metrics the load tester can find: {why}"
    return urls, interval, None


def _counter_delta(start: Mapping[SeriesKey, float], end: Mapping[SeriesKey, float]) -> tuple[float, int]:
    """Sum over series of end − start (a new series from zero, a reset one from zero); and how many series
    disappeared (what they counted after ``start`` is lost)."""
    total = 0.0
    for key, v in end.items():
        before = start.get(key, 0.0)
        total += v - before if v >= before else v
    return total, sum(1 for key in start if key not in end)


def _total(s: Snapshot, e: Snapshot, name: str, **labels: str) -> tuple[float, int]:
    """(delta, vanished series) of one of our counters, summed over series."""
    return _counter_delta(s.select(names.exported(name), **labels), e.select(names.exported(name), **labels))


def _mean(total: float, count: float, ndigits: int = 3) -> float | None:
    return round(total / count, ndigits) if count > 0 else None


def replicas_in(s: Snapshot, application: str) -> int | None:
    """Healthy replicas of the model's deployment as the Serve controller last reported them."""
    found = s.select(names.SERVE_REPLICA_HEALTHY, application=application, deployment=names.DEPLOYMENT)
    if found:
        return round(sum(found.values()))
    live = {dict(k[1]).get("replica") for k in s.select(names.SERVE_ONGOING, application=application,
                                                           deployment=names.DEPLOYMENT)}
    live.discard(None)
    return len(live) if live else None


def node_cpu(s: Snapshot) -> dict[str, Any] | None:
    """The server's CPU as its Ray nodes last reported it (a gauge: the agents' latest report when the step
    ended, not an average over the step): the busiest node's share of its cores, the nodes and their cores. Ray's
    exporter drops a gauge between two of its reports now and then: a step whose end read lacks it takes the
    read at its start; None when neither has it."""
    util = [v for k, v in s.samples.items() if k[0] == names.NODE_CPU_UTILIZATION]
    if not util:
        return None
    cores = [v for k, v in s.samples.items() if k[0] == names.NODE_CPU_COUNT]
    return {"max_node_busy": round(max(util) / 100.0, 4), "nodes": len(util),
            "cores": round(sum(cores)) if cores else None, "source": names.NODE_CPU_UTILIZATION + " at step end"}


def _predict_routes(s: Snapshot, application: str) -> dict[SeriesKey, float]:
    return {k: v for k, v in s.select(names.SERVE_REQUESTS, application=application).items()
            if dict(k[1]).get("route", "").endswith("/predict")}


def step_metrics(start: Snapshot, end: Snapshot, *, application: str) -> dict[str, Any]:
    """The ``server_metrics`` of a step from its two snapshots (see the module docstring)."""
    app = {"application": application}
    requests, gone = _counter_delta(_predict_routes(start, application), _predict_routes(end, application))
    responses: dict[str, int] = {}
    http0 = start.select(names.SERVE_HTTP_REQUESTS, method="POST", **app)
    for key, v in end.select(names.SERVE_HTTP_REQUESTS, method="POST", **app).items():
        before = http0.get(key, 0.0)
        code = dict(key[1]).get("status_code", "?")
        responses[code] = responses.get(code, 0) + round(v - before if v >= before else v)
    timed, t_gone = _total(start, end, names.TIMED_REQUESTS, **app)
    queue, _ = _total(start, end, names.QUEUE_TIME_MS, **app)
    model, _ = _total(start, end, names.MODEL_TIME_MS, **app)
    forwards, _ = _total(start, end, names.FORWARDS, **app)
    inputs, _ = _total(start, end, names.BATCH_INPUTS, **app)
    forward_ms, _ = _total(start, end, names.FORWARD_TIME_MS, **app)
    slots, _ = _total(start, end, names.TOKEN_SLOTS, **app)
    padding, _ = _total(start, end, names.PADDING_SLOTS, **app)
    notes = []
    if gone or t_gone:
        notes.append(f"{max(gone, t_gone)} replica series ended during the step (a replica stopped); what they "
                     "served after the first read is not counted")
    return {
        "status": "ok",
        "requests": round(requests),
        "responses": dict(sorted(responses.items())),
        "timed_requests": round(timed),
        "forwards": round(forwards),
        "mean_batch_size": _mean(inputs, forwards, 2),
        "padding_ratio": round(padding / slots, 4) if slots > 0 else None,
        "queue_ms": _mean(queue, timed),
        "model_ms": _mean(model, timed),
        "forward_ms": _mean(forward_ms, forwards),
        "replicas": {"start": replicas_in(start, application), "end": replicas_in(end, application)},
        "cpu": node_cpu(end) or node_cpu(start),
        "notes": notes,
    }


@dataclass
class ServerScraper:
    """Reads one target's metrics endpoints; :meth:`settled` waits until a step's last metrics have arrived."""

    urls: Sequence[str]
    application: str
    interval_s: float = DEFAULT_INTERVAL_S
    timeout_s: float = SCRAPE_TIMEOUT_S
    last: Snapshot | None = field(default=None, repr=False)

    @property
    def pause_s(self) -> float:
        """How long after a step its metrics are complete: one report interval and a margin."""
        return self.interval_s + SETTLE_MARGIN_S

    async def snapshot(self) -> Snapshot:
        import aiohttp

        async def one(session: aiohttp.ClientSession, url: str) -> tuple[dict[SeriesKey, float], str | None]:
            try:
                async with session.get(url) as r:
                    text = await r.text()
                    if r.status != 200:
                        return {}, f"GET {url} answered HTTP {r.status}"
                return parse_exposition(text), None
            except Exception as e:  # recorded as the reason; the step's other figures still count
                return {}, f"GET {url} failed: {type(e).__name__}: {e}"

        at = time.time()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as session:
            results = await asyncio.gather(*(one(session, u) for u in self.urls))
        samples: dict[SeriesKey, float] = {}
        for got, _ in results:
            samples.update(got)
        return Snapshot(at=at, samples=samples, errors=tuple(e for _, e in results if e))

    def _fingerprint(self, s: Snapshot) -> tuple[float, ...]:
        app = {"application": self.application}
        return tuple(sum(s.select(n, **app).values()) for n in (
            names.SERVE_REQUESTS, names.exported(names.TIMED_REQUESTS), names.exported(names.FORWARDS),
            names.SERVE_HTTP_REQUESTS))

    async def settled(self, *, since: float) -> tuple[Snapshot, float]:
        """A snapshot taken once everything recorded before ``since`` (epoch s) has reached the endpoints, and
        the seconds spent waiting for it: one interval after ``since``, then until two reads agree, at most
        :data:`MAX_SETTLE_INTERVALS` intervals in all."""
        t0 = time.time()
        wait = since + self.pause_s - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        deadline = since + MAX_SETTLE_INTERVALS * self.interval_s + 2 * SETTLE_MARGIN_S
        snap = await self.snapshot()
        while time.time() < deadline:
            await asyncio.sleep(min(1.0, self.interval_s / 2))
            again = await self.snapshot()
            if self._fingerprint(again) == self._fingerprint(snap) and not again.errors:
                snap = again
                break
            snap = again
        self.last = snap
        return snap, time.time() - t0


def unreachable(why: str, urls: Sequence[str] = ()) -> dict[str, Any]:
    return {"status": "unreachable", "error": why, "urls": list(urls)}


def describe(start: Snapshot, end: Snapshot, *, application: str, urls: Sequence[str],
             settle_s: float) -> dict[str, Any]:
    """``server_metrics`` for a step, or the reason its endpoints could not be read."""
    errors = [*start.errors, *end.errors]
    if errors and len(errors) >= 2 * len(urls):
        return unreachable("; ".join(sorted(set(errors))), urls)
    doc = step_metrics(start, end, application=application)
    if errors:
        doc["status"] = "partial"
        doc["notes"].append("some endpoints could not be read: " + "; ".join(sorted(set(errors))))
    doc.update(urls=list(urls), window=[round(start.at, 3), round(end.at, 3)], settle_s=round(settle_s, 2))
    return doc


class StepReader:
    """The server-metrics part of a run, for one client: client 0 reads the target's endpoints around each step;
    the other clients only pause as long as client 0 waits for the metrics to settle.

    :param info: the target's ``/info`` (endpoints, report interval, application name).
    :param reads: this client reads the endpoints (client 0 of the run).
    :param pauses: the run has several clients, which must stay in step with the one that reads.
    """

    def __init__(self, info: Mapping[str, Any] | None, *, reads: bool, pauses: bool) -> None:
        urls, interval, self.why = target_endpoints(info)
        self.interval_s = interval or DEFAULT_INTERVAL_S
        self.reads, self.pauses = reads, pauses and not self.why
        application = str((info or {}).get("model") or "")
        self.scraper = ServerScraper(urls, application, self.interval_s) if reads and urls and application else None
        if reads and urls and not application:
            self.why = "the target's /info names no model (the Serve application to read)"
        self.start: Snapshot | None = None
        self.start_settled = True
        self.settle_s = 0.0

    async def begin(self, *, settle: bool, since: float | None = None) -> None:
        """Before a step: reuse the previous step's settled end, or read now (``settle``: once what was sent
        before ``since`` has arrived; otherwise at once, when the clients start together)."""
        if self.scraper is None:
            return
        if self.scraper.last is not None:
            self.start, self.start_settled = self.scraper.last, True
        elif settle:
            self.start, _ = await self.scraper.settled(since=since if since is not None else time.time())
            self.start_settled = True
        else:
            self.start, self.start_settled = await self.scraper.snapshot(), False

    async def finish(self) -> dict[str, Any] | None:
        """After a step: its ``server_metrics`` (client 0), or None after the common pause (other clients)."""
        if not self.reads:
            if self.pauses:
                await asyncio.sleep(self.interval_s + SETTLE_MARGIN_S)
            return None
        if self.scraper is None or self.start is None:
            return unreachable(self.why or "the target's metrics endpoints are unknown")
        end, waited = await self.scraper.settled(since=time.time())
        doc = describe(self.start, end, application=self.scraper.application, urls=self.scraper.urls,
                       settle_s=waited)
        if not self.start_settled and doc.get("status") != "unreachable":
            doc["notes"].append("the first read was taken at the common start without waiting for earlier "
                                "requests (each client's one probe) to arrive; they may be counted here")
        self.start = end
        return doc

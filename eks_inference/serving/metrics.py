"""What a replica adds to Ray Serve's own Prometheus metrics, and where they can be read.

Ray Serve 2.60 already exports, per replica, the requests it handled (by route), their latency and HTTP status,
and for ``@serve.batch`` the batch size and how long a *batch* waited to fill after its first request
(``ray_serve_actual_batch_size``, ``ray_serve_batch_wait_time_ms``; ``ray/serve/batching.py``). It cannot see
what the load tester and the dashboards need to split a request's latency: how long each *request* waited
before the forward that carried it began (that includes waiting behind a running forward, which Serve's batch
wait does not), how long that forward took per compiled shape, and how much of each forward was padding. Those
are :data:`eks_inference.metric_names.OURS`; their labels are bounded: ``application`` and ``replica`` (one
value per replica, as Serve's own) and ``bucket``, one of the compiled shapes.

Where they are read: every Ray node's metrics agent serves Prometheus text on its metrics export port (8080 in
the cluster, pinned by the RayService; a random port locally). :func:`metrics_urls` finds the nodes of this Ray
cluster from the GCS, so ``/info`` can name them; locally ``EKS_INFERENCE_METRICS_HOST`` (set by
:class:`~eks_inference.serving.local.LocalRay`) replaces the node address with ``127.0.0.1``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from eks_inference import metric_names as names

METRICS_HOST_ENV = "EKS_INFERENCE_METRICS_HOST"
"""Host to advertise in metrics URLs instead of the node's address (local mode: 127.0.0.1)."""

MS_BOUNDARIES = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
                 30000.0]
"""Milliseconds, from sub-millisecond CPU forwards to a compile-sized stall."""


def bucket_label(batch: int, seq: int) -> str:
    """The compiled shape a forward ran at, as the ``bucket`` label value (``8x128``)."""
    return f"{batch}x{seq}"


class ReplicaMetrics:
    """The replica's own metrics (:data:`~eks_inference.metric_names.OURS`), recorded through ``ray.util.metrics``.

    Distributions are histograms; every sum a mean is computed from is a counter, because Ray rebuilds histogram
    sums from bucket midpoints (see :mod:`eks_inference.metric_names`). Thread-safe: forwards are recorded on the
    replica's forward thread, requests on its event loop. Label dictionaries are built once per bucket.
    """

    def __init__(self, *, application: str, replica: str) -> None:
        from ray.util import metrics as m

        base = ("application", "replica")
        shaped = (*base, "bucket")
        default = {"application": application, "replica": replica}

        def hist(name: str, doc: str, keys: tuple[str, ...]) -> Any:
            return m.Histogram(name, doc, boundaries=MS_BOUNDARIES, tag_keys=keys).set_default_tags(default)

        def counter(name: str, doc: str, keys: tuple[str, ...]) -> Any:
            return m.Counter(name, doc, tag_keys=keys).set_default_tags(default)

        self.queue_ms = hist(names.REQUEST_QUEUE_MS, "Per predict request: ms from admission to the start of the "
                             "first forward carrying it", base)
        self.model_ms = hist(names.REQUEST_MODEL_MS, "Per predict request: ms from the start of its first forward "
                             "to the end of its last", base)
        self.timed = counter(names.TIMED_REQUESTS, "Predict requests that reached the model", base)
        self.queue_total = counter(names.QUEUE_TIME_MS, "Sum of per-request queue times, ms", base)
        self.model_total = counter(names.MODEL_TIME_MS, "Sum of per-request model times, ms", base)
        self.forward_ms = hist(names.FORWARD_MS, "Per forward: ms in the backend, by compiled shape", shaped)
        self.forwards = counter(names.FORWARDS, "Forwards run, by compiled shape", shaped)
        self.inputs = counter(names.BATCH_INPUTS, "Real inputs carried by forwards, by compiled shape", shaped)
        self.forward_total = counter(names.FORWARD_TIME_MS, "Sum of forward times, ms, by compiled shape", shaped)
        self.slots = counter(names.TOKEN_SLOTS, "Token positions computed, by compiled shape", shaped)
        self.padding = counter(names.PADDING_SLOTS, "Token positions computed on padding, by compiled shape", shaped)
        self._tags: dict[tuple[int, int], dict[str, str]] = {}
        self._lock = threading.Lock()

    def request(self, queue_s: float, model_s: float) -> None:
        queue_ms, model_ms = max(queue_s, 0.0) * 1000.0, max(model_s, 0.0) * 1000.0
        self.queue_ms.observe(queue_ms)
        self.model_ms.observe(model_ms)
        self.timed.inc()
        if queue_ms > 0:
            self.queue_total.inc(queue_ms)
        if model_ms > 0:
            self.model_total.inc(model_ms)

    def forward(self, *, rows: int, batch: int, seq: int, real_tokens: int, seconds: float) -> None:
        """One forward at shape ``batch`` × ``seq`` carrying ``rows`` inputs with ``real_tokens`` non-pad tokens."""
        tags = self._tags.get((batch, seq))
        if tags is None:
            with self._lock:
                tags = self._tags.setdefault((batch, seq), {"bucket": bucket_label(batch, seq)})
        ms = seconds * 1000.0
        self.forward_ms.observe(ms, tags)
        self.forwards.inc(1, tags)
        if rows > 0:
            self.inputs.inc(rows, tags)
        if ms > 0:
            self.forward_total.inc(ms, tags)
        slots = batch * seq
        self.slots.inc(slots, tags)
        if slots > real_tokens:
            self.padding.inc(slots - real_tokens, tags)


class NoMetrics:
    """Stands in where Ray's recorder is unavailable (a replica outside Serve, a benchmark)."""

    def request(self, queue_s: float, model_s: float) -> None:
        pass

    def forward(self, *, rows: int, batch: int, seq: int, real_tokens: int, seconds: float) -> None:
        pass


def replica_metrics(application: str, replica: str | None,
                    warn: Callable[[str], Any] | None = None) -> ReplicaMetrics | NoMetrics:
    """The replica's metrics; :class:`NoMetrics` (with a warning) when they cannot be created, since serving
    must not fail for want of them."""
    try:
        return ReplicaMetrics(application=application, replica=replica or "unknown")
    except Exception as e:
        if warn is not None:
            warn(f"replica metrics are off: {type(e).__name__}: {e}")
        return NoMetrics()


def node_metrics_urls(nodes: list[dict[str, Any]], *, host: str | None = None) -> dict[str, str]:
    """``node id → http://ADDRESS:PORT/metrics`` for every alive node that exports metrics (``ray.nodes()`` rows)."""
    out = {}
    for n in nodes:
        port = n.get("MetricsExportPort")
        if not n.get("Alive") or not isinstance(port, int) or port <= 0:
            continue
        addr = host or n.get("NodeManagerAddress")
        if not addr:
            continue
        addr = f"[{addr}]" if ":" in addr else addr
        out[str(n.get("NodeID"))] = f"http://{addr}:{port}/metrics"
    return out


def metrics_urls() -> tuple[str | None, list[str], float | None]:
    """(this node's metrics URL, every node's, the metrics report interval in s). Blocking: one GCS call."""
    import ray

    urls = node_metrics_urls(ray.nodes(), host=os.environ.get(METRICS_HOST_ENV) or None)
    mine = urls.get(ray.get_runtime_context().get_node_id())
    try:
        interval = float(ray._config.metrics_report_interval_ms()) / 1000.0
    except Exception:
        interval = None
    return mine, sorted(urls.values()), interval

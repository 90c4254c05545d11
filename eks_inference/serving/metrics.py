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
ROWS_BOUNDARIES = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]


def bucket_label(batch: int, seq: int) -> str:
    """The compiled shape a forward ran at, as the ``bucket`` label value (``8x128``)."""
    return f"{batch}x{seq}"


class ReplicaMetrics:
    """The replica's own metrics (:data:`~eks_inference.metric_names.OURS`), recorded through ``ray.util.metrics``.

    Thread-safe: forwards are recorded on the replica's forward thread, requests on its event loop. Label
    dictionaries are built once per bucket so that a record is one call into Ray's recorder.
    """

    def __init__(self, *, application: str, replica: str) -> None:
        from ray.util import metrics as m

        base = ("application", "replica")
        default = {"application": application, "replica": replica}
        self.queue_ms = m.Histogram(names.REQUEST_QUEUE_MS, "Per predict request: ms from admission to the start "
                                    "of the first forward carrying it", boundaries=MS_BOUNDARIES,
                                    tag_keys=base).set_default_tags(default)
        self.model_ms = m.Histogram(names.REQUEST_MODEL_MS, "Per predict request: ms from the start of its first "
                                    "forward to the end of its last", boundaries=MS_BOUNDARIES,
                                    tag_keys=base).set_default_tags(default)
        shaped = (*base, "bucket")
        self.forward_ms = m.Histogram(names.FORWARD_MS, "Per forward: ms in the backend, by compiled shape",
                                      boundaries=MS_BOUNDARIES, tag_keys=shaped).set_default_tags(default)
        self.rows = m.Histogram(names.BATCH_ROWS, "Per forward: real inputs, by compiled shape",
                                boundaries=ROWS_BOUNDARIES, tag_keys=shaped).set_default_tags(default)
        self.slots = m.Counter(names.TOKEN_SLOTS, "Token positions computed, by compiled shape",
                               tag_keys=shaped).set_default_tags(default)
        self.padding = m.Counter(names.PADDING_SLOTS, "Token positions computed on padding, by compiled shape",
                                 tag_keys=shaped).set_default_tags(default)
        self._tags: dict[tuple[int, int], dict[str, str]] = {}
        self._lock = threading.Lock()

    def request(self, queue_s: float, model_s: float) -> None:
        self.queue_ms.observe(max(queue_s, 0.0) * 1000.0)
        self.model_ms.observe(max(model_s, 0.0) * 1000.0)

    def forward(self, *, rows: int, batch: int, seq: int, real_tokens: int, seconds: float) -> None:
        """One forward at shape ``batch`` × ``seq`` carrying ``rows`` inputs with ``real_tokens`` non-pad tokens."""
        tags = self._tags.get((batch, seq))
        if tags is None:
            with self._lock:
                tags = self._tags.setdefault((batch, seq), {"bucket": bucket_label(batch, seq)})
        self.forward_ms.observe(seconds * 1000.0, tags)
        self.rows.observe(float(rows), tags)
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

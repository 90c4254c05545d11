"""Names of the Prometheus metrics that serving exports and that the load tester, the alert rules and the
dashboards read: one list, so that a renamed metric breaks a test instead of a dashboard.

How a name is exported (Ray 2.60, ``ray/_private/telemetry/open_telemetry_metric_recorder.py`` and
``ray/util/metrics.py``): every ``ray.util.metrics`` metric is exported by the node's metrics agent under the
namespace ``ray``, so ``eks_inference_request_queue_ms`` becomes ``ray_eks_inference_request_queue_ms``; a
``Counter`` gets the suffix ``_total``; a ``Histogram`` becomes ``_bucket`` (with ``le``), ``_sum`` and ``_count``.
Ray adds the labels ``Component``, ``NodeAddress``, ``SessionName``, ``Version`` and ``WorkerId`` to each series.

Plain constants only (no Ray, no Prometheus client): the serving images, the load-test image and the CDK app all
import this module.
"""

from __future__ import annotations

RAY_PREFIX = "ray_"

# -- ours (eks_inference.serving.metrics); labels: application, replica (+ bucket where noted) --------------
# Ray 2.60 rebuilds a histogram's _sum from bucket midpoints (open_telemetry_metric_recorder.py,
# record_histogram_aggregated_batch: "the histogram sum value will be an approximation"), so every mean the load
# tester and the dashboards compute comes from the exact counters below; the histograms give the distributions.
REQUEST_QUEUE_MS = "eks_inference_request_queue_ms"
"""Histogram, per predict request: from admission (body parsed) to the start of the first forward carrying it."""
REQUEST_MODEL_MS = "eks_inference_request_model_ms"
"""Histogram, per predict request: from the start of its first forward to the end of its last one."""
FORWARD_MS = "eks_inference_forward_ms"
"""Histogram, per forward, label ``bucket`` (compiled shape ``BxS``): the backend's forward alone."""
TIMED_REQUESTS = "eks_inference_timed_requests"
"""Counter: predict requests that reached the model (the count behind the two time counters)."""
QUEUE_TIME_MS = "eks_inference_queue_time_ms"
"""Counter: exact sum of the per-request queue times, ms."""
MODEL_TIME_MS = "eks_inference_model_time_ms"
"""Counter: exact sum of the per-request model times, ms."""
FORWARDS = "eks_inference_forwards"
"""Counter, label ``bucket``: forwards run."""
BATCH_INPUTS = "eks_inference_batch_inputs"
"""Counter, label ``bucket``: real inputs carried by those forwards (the rest of each ``B`` is padding)."""
FORWARD_TIME_MS = "eks_inference_forward_time_ms"
"""Counter, label ``bucket``: exact sum of forward times, ms."""
TOKEN_SLOTS = "eks_inference_token_slots"
"""Counter, label ``bucket``: token positions computed (B × S per forward)."""
PADDING_SLOTS = "eks_inference_padding_slots"
"""Counter, label ``bucket``: token positions computed on padding (padded rows and padded tokens)."""

COUNTERS = frozenset({TIMED_REQUESTS, QUEUE_TIME_MS, MODEL_TIME_MS, FORWARDS, BATCH_INPUTS, FORWARD_TIME_MS,
                      TOKEN_SLOTS, PADDING_SLOTS})
OURS = (REQUEST_QUEUE_MS, REQUEST_MODEL_MS, FORWARD_MS, TIMED_REQUESTS, QUEUE_TIME_MS, MODEL_TIME_MS, FORWARDS,
        BATCH_INPUTS, FORWARD_TIME_MS, TOKEN_SLOTS, PADDING_SLOTS)

# -- a family's replica (eks_inference.serving.family); labels: application, replica, processor ---------------
FAMILY_LOADS = "eks_inference_family_loads"
"""Counter: members loaded (fetched, verified against the index's digest and loaded) on a miss."""
FAMILY_EVICTIONS = "eks_inference_family_evictions"
"""Counter: members evicted to stay within the replica's memory budget."""
FAMILY_HITS = "eks_inference_family_hits"
"""Counter: predict requests whose member was already held (a warm request)."""
FAMILY_COLD = "eks_inference_family_cold_requests"
"""Counter: predict requests that waited for their member to load on this replica (a cold request)."""
FAMILY_LOAD_MS = "eks_inference_family_load_ms"
"""Histogram: ms to load one member (weights fetch and verify, artifact, load, one warm-up forward)."""
FAMILY_LOAD_TIME_MS = "eks_inference_family_load_time_ms"
"""Counter: exact sum of member load times, ms."""
FAMILY_HELD_BYTES = "eks_inference_family_held_bytes"
"""Gauge: in-memory bytes of the members the replica holds (at most its memory budget)."""
FAMILY_COUNTERS = frozenset({FAMILY_LOADS, FAMILY_EVICTIONS, FAMILY_HITS, FAMILY_COLD, FAMILY_LOAD_TIME_MS})
FAMILY = (FAMILY_LOADS, FAMILY_EVICTIONS, FAMILY_HITS, FAMILY_COLD, FAMILY_LOAD_MS, FAMILY_LOAD_TIME_MS,
          FAMILY_HELD_BYTES)

# -- Ray Serve's own (already exported names) ------------------------------------------------------------------
SERVE_REQUESTS = "ray_serve_deployment_request_counter_total"
"""Counter per replica, label ``route`` = the full path (``/minilm/predict``): every request a replica handled."""
SERVE_HTTP_REQUESTS = "ray_serve_num_http_requests_total"
"""Counter, labels ``application``, ``method``, ``status_code``: HTTP requests answered, by status."""
SERVE_HTTP_LATENCY = "ray_serve_http_request_latency_ms"
SERVE_REPLICA_HEALTHY = "ray_serve_deployment_replica_healthy"
"""Gauge from the Serve controller: healthy replicas per deployment (Ray 2.60 without high-cardinality tags)."""
SERVE_TARGET_REPLICAS = "ray_serve_autoscaling_target_replicas"
SERVE_ONGOING = "ray_serve_replica_processing_queries"
"""Gauge per replica: requests in the replica now (working or waiting for a batch)."""
SERVE_HEALTH_CHECK_FAILURES = "ray_serve_health_check_failures_total"
"""Counter from the Serve controller: failed replica health checks; Serve replaces a replica that fails them (or
that died: the check then fails too)."""
SERVE_DEPLOYMENT_STATUS = "ray_serve_deployment_status"
"""Gauge from the Serve controller, one series per deployment while it exists (value: its status code)."""
NODE_CPU_UTILIZATION = "ray_node_cpu_utilization"
"""Gauge per Ray node from its dashboard agent (ray/dashboard/modules/reporter/reporter_agent.py): the node's CPU
use in percent of all its cores, as of the agent's last report."""
NODE_CPU_COUNT = "ray_node_cpu_count"
"""Gauge per Ray node: its cores."""

DEPLOYMENT = "InferenceModel"
"""The model's Serve deployment (``eks_inference.serving.serve_config.DEPLOYMENT_NAME``)."""


def exported(name: str) -> str:
    """The name Prometheus sees for one of :data:`OURS` (counters with ``_total``; histograms: the base name)."""
    full = RAY_PREFIX + name
    return full + "_total" if name in COUNTERS | FAMILY_COUNTERS else full

"""The server's side of a step from two scrapes (eks_inference/loadgen/server_metrics.py): per-series counter
differences, replicas, the reasons recorded when endpoints cannot be read, and the report's merge of clients."""

from __future__ import annotations

from typing import Any

from eks_inference import metric_names as names
from eks_inference.loadgen.server_metrics import Snapshot, describe, parse_exposition, target_endpoints
from eks_inference.measure.spec import Arrival, Mode, StepSpec, TargetInfo
from eks_inference.measure.stats import StepRecorder
from eks_inference.measure.steps import ClientStep, server_side

APP = "minilm"


def exposition(replicas: dict[str, dict[str, float]], *, healthy: int) -> str:
    """Prometheus text as Ray's agent writes it, for replicas ``{id: {counter: value}}``."""
    lines = []
    for rid, values in replicas.items():
        base = f'application="{APP}",deployment="InferenceModel",replica="{rid}",WorkerId="w{rid}"'
        lines.append(f'{names.SERVE_REQUESTS}{{{base},route="/{APP}/predict"}} {values["requests"]}')
        lines.append(f'{names.SERVE_REQUESTS}{{{base},route="/{APP}/info"}} 99')
        for n in (names.TIMED_REQUESTS, names.QUEUE_TIME_MS, names.MODEL_TIME_MS):
            lines.append(f'{names.exported(n)}{{{base}}} {values[n]}')
        shape = f'{base},bucket="8x32"'
        for n in (names.FORWARDS, names.BATCH_INPUTS, names.FORWARD_TIME_MS, names.TOKEN_SLOTS, names.PADDING_SLOTS):
            lines.append(f'{names.exported(n)}{{{shape}}} {values[n]}')
        lines.append(f'{names.SERVE_HTTP_REQUESTS}{{application="{APP}",method="POST",status_code="200",'
                     f'WorkerId="w{rid}"}} {values["requests"]}')
    lines.append(f'{names.SERVE_REPLICA_HEALTHY}{{application="{APP}",deployment="InferenceModel"}} {healthy}')
    return "\n".join(lines) + "\n"


def counters(requests: float, forwards: float, inputs: float) -> dict[str, float]:
    return {"requests": requests, names.TIMED_REQUESTS: requests, names.QUEUE_TIME_MS: 2.0 * requests,
            names.MODEL_TIME_MS: 10.0 * requests, names.FORWARDS: forwards, names.BATCH_INPUTS: inputs,
            names.FORWARD_TIME_MS: 8.0 * forwards, names.TOKEN_SLOTS: 256.0 * forwards,
            names.PADDING_SLOTS: 64.0 * forwards}


def snap(text: str, at: float) -> Snapshot:
    return Snapshot(at=at, samples=parse_exposition(text))


def test_a_step_is_the_difference_of_two_reads_series_by_series() -> None:
    start = snap(exposition({"a": counters(100, 40, 100)}, healthy=1), 1.0)
    # replica a served 60 more; replica b appeared during the step and served 30 (counted from zero)
    end = snap(exposition({"a": counters(160, 55, 160), "b": counters(30, 10, 30)}, healthy=2), 9.0)
    doc = describe(start, end, application=APP, urls=["http://10.0.64.5:8080/metrics"], settle_s=1.5)
    assert doc["status"] == "ok" and doc["notes"] == []
    assert (doc["requests"], doc["timed_requests"], doc["responses"]) == (90, 90, {"200": 90})
    assert (doc["forwards"], doc["mean_batch_size"]) == (25, 90 / 25)
    assert (doc["queue_ms"], doc["model_ms"], doc["forward_ms"]) == (2.0, 10.0, 8.0)
    assert doc["padding_ratio"] == 0.25 and doc["replicas"] == {"start": 1, "end": 2}
    assert doc["window"] == [1.0, 9.0] and doc["settle_s"] == 1.5


def test_a_replica_that_stopped_is_noted_not_guessed() -> None:
    start = snap(exposition({"a": counters(100, 40, 100), "b": counters(50, 20, 50)}, healthy=2), 1.0)
    end = snap(exposition({"a": counters(130, 50, 130)}, healthy=1), 9.0)
    doc = describe(start, end, application=APP, urls=["u"], settle_s=0.0)
    assert doc["requests"] == 30 and "replica stopped" in doc["notes"][0]


def test_unreadable_endpoints_are_reported_with_the_reason_never_as_zeros() -> None:
    bad = Snapshot(at=1.0, samples={}, errors=("GET http://10.0.64.5:8080/metrics failed: ConnectionRefusedError",))
    doc = describe(bad, Snapshot(at=2.0, samples={}, errors=bad.errors), application=APP,
                   urls=["http://10.0.64.5:8080/metrics"], settle_s=0.0)
    assert doc == {"status": "unreachable", "error": bad.errors[0], "urls": ["http://10.0.64.5:8080/metrics"]}
    assert target_endpoints({"model": APP})[2] is not None and "metrics_url" in target_endpoints({"model": APP})[2]
    assert target_endpoints(None)[2] == "the target's /info could not be read"
    assert target_endpoints({"metrics_url": "http://x/metrics", "metrics_report_interval_s": 2}) == (
        ["http://x/metrics"], 2.0, None)


def client_step(index: int, server: dict[str, Any] | None) -> ClientStep:
    rec = StepRecorder(window_start=0.0)
    for _ in range(10):
        rec.record_ok(0.020, 1.0, 1)  # 20 ms each
    spec = StepSpec(index=0, mode=Mode.OPEN, arrival=Arrival.CONSTANT, rate=10.0, concurrency=None,
                    client_rate=5.0, client_concurrency=None, duration_s=2.0, requests=None, warmup_s=0.0)
    return ClientStep(source=f"c{index}", run_id="r", client_index=index, clients=2,
                      target=TargetInfo(name="t", url="http://t/m"), spec=spec, stats=rec.finish(window_s=2.0),
                      server=server)


def test_the_report_takes_the_reading_client_and_splits_the_clients_mean() -> None:
    srv = {"status": "ok", "queue_ms": 3.0, "model_ms": 12.0, "requests": 20}
    doc = server_side([client_step(1, None), client_step(0, srv)])
    assert doc["read_by_client"] == 0 and doc["requests"] == 20
    assert doc["split_ms"] == {"client_mean": 20.0, "queue": 3.0, "model": 12.0, "network_and_proxy": 5.0}
    assert server_side([client_step(0, None), client_step(1, None)]) == {"status": "not recorded"}
    gone = server_side([client_step(0, {"status": "unreachable", "error": "refused"})])
    assert gone["status"] == "unreachable" and "split_ms" not in gone

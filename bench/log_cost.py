"""What per-request logs cost in CloudWatch Logs, from the bytes a real local Ray Serve run writes per request.

    .venv/bin/python bench/log_cost.py              # ~1 minute after the model is cached
    .venv/bin/python bench/log_cost.py --requests 500

The bundled model is served by a private local Ray (the serve config ``render_serve_config`` writes) with the
application's access log at ``EKS_INFERENCE_ACCESS_LOG_SAMPLE=1`` (every request) and Serve's logger on stderr, as in
the cluster. After N requests it reads, from the session's log files:

* Serve's own access lines (``logs/serve/replica_*.log``, one per request, turned on here with ``access_log=True``;
  the deployed serve config keeps them off): what shipping every request would send;
* the application's access lines (``"access":`` JSON on the replica's stderr, ``logs/worker-*.err``).

Each line reaches CloudWatch Logs as a Fluent Bit record: the line as ``log`` plus ``stream``, ``logtag`` and the
``kubernetes`` block the add-on's filter adds (labels and annotations off). That block is built here with the names
this project's pods carry, so its size is an estimate from the record's shape, not a measurement. The costs per
million requests use :data:`eks_inference.tables.prices.CLOUDWATCH_LOGS_INGESTION` (us-east-1), at 1 in 100 sampled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bench/ itself is no package root: a module here must not shadow one of the standard library's for Ray.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
os.environ["EKS_INFERENCE_ACCESS_LOG_SAMPLE"] = "1"  # before Ray starts: its workers inherit this environment
os.environ["RAY_SERVE_LOG_TO_STDERR"] = "1"
os.environ["RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE"] = "1"  # throughput mode buffers 1000 lines before a file write

from eks_inference.config import ModelSpec, Processor, ServingSpec, Task  # noqa: E402
from eks_inference.serving.local import LocalRay, free_port  # noqa: E402
from eks_inference.serving.serve_config import render_serve_config  # noqa: E402
from eks_inference.tables.prices import CLOUDWATCH_LOGS_INGESTION  # noqa: E402

NAME = "bench-logs"
CACHE = ROOT / ".eks-inference" / "bench"
SAMPLE = 0.01


def fluent_bit_record(line: str) -> str:
    """The JSON CloudWatch Logs receives for ``line`` from the add-on's Fluent Bit (cri parser + kubernetes filter)."""
    return json.dumps({
        "log": line, "stream": "stderr", "logtag": "F",
        "kubernetes": {
            "pod_name": "minilm-graviton-raycluster-7xk2p-cpu-group-worker-q8z4n",
            "namespace_name": "eks-inference", "pod_id": "3f1c9a2e-8b7d-4e6f-9a1b-2c3d4e5f6a7b",
            "host": "ip-10-0-137-42.us-west-2.compute.internal", "container_name": "ray-worker",
            "docker_id": "9" * 64, "container_hash": "111122223333.dkr.ecr.us-west-2.amazonaws.com/eks-inference-"
            "graviton@sha256:" + "a" * 64,
            "container_image": "111122223333.dkr.ecr.us-west-2.amazonaws.com/eks-inference-graviton:" + "b" * 64,
        },
    }, separators=(",", ":"))


def mean_bytes(lines: list[str]) -> float:
    return sum(len(s.encode()) for s in lines) / len(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    a = parser.parse_args()
    model = ModelSpec(name=NAME, task=Task.EMBEDDING, processors=(Processor.CPU,),
                      serving=ServingSpec(max_batch_size=8, batch_wait_timeout_s=0.0, num_threads=1))
    ray = LocalRay(http_host="127.0.0.1", http_port=free_port()).start()
    try:
        cfg = render_serve_config(model, Processor.CPU, model_uri="bundled:all-minilm-l6-v2",
                                  artifact_uri=str(CACHE / "repo"), cache_dir=str(CACHE / "cache"),
                                  http_host="127.0.0.1", http_port=ray.http_port, access_log=True)
        ray.deploy(cfg)
        ray.wait_ready(NAME, timeout_s=900)
        url = f"{ray.url}/{NAME}/predict"
        for i in range(a.requests):
            body = json.dumps({"inputs": [f"request {i}: the quick brown fox jumps over the lazy dog"]}).encode()
            req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()
        assert ray.temp_dir is not None
        logs = Path(ray.temp_dir) / "session_latest" / "logs"
        serve_lines: list[str] = []
        app_lines: list[str] = []
        deadline_reads = 0
        while deadline_reads < 50 and (len(serve_lines) < a.requests or len(app_lines) < a.requests):
            serve_lines = [ln for f in sorted((logs / "serve").glob("replica_*.log"))
                           for ln in f.read_text(errors="replace").splitlines() if "/predict" in ln]
            app_lines = [ln for f in sorted(logs.glob("worker-*.err"))
                         for ln in f.read_text(errors="replace").splitlines() if ln.startswith('{"access":')]
            deadline_reads += 1
            if len(serve_lines) < a.requests or len(app_lines) < a.requests:
                import time
                time.sleep(0.2)
    finally:
        ray.shutdown()
    if not serve_lines or not app_lines:
        print(f"found {len(serve_lines)} Serve access lines and {len(app_lines)} application lines; expected "
              f"{a.requests} of each", file=sys.stderr)
        return 1
    price = CLOUDWATCH_LOGS_INGESTION
    rows = []
    for what, lines, share in (("Serve access log, every request", serve_lines, 1.0),
                               ("application access log, every request", app_lines, 1.0),
                               (f"application access log, 1 in {round(1 / SAMPLE)}", app_lines, SAMPLE)):
        line_b = mean_bytes(lines)
        event_b = mean_bytes([fluent_bit_record(ln) for ln in lines])
        usd = price.usd_per_million_events(event_b) or 0.0
        rows.append((what, len(lines), line_b, event_b, usd * share))
    print(f"{a.requests} requests; CloudWatch Logs ingestion ${price.usd_per_gb['us-east-1']}/GB (us-east-1, "
          f"{price.date}), {price.event_overhead_bytes} B per event")
    print(f"{'what':42} {'lines':>6} {'B/line':>7} {'B/event':>8} {'USD per 1M requests':>20}")
    for what, n, line_b, event_b, usd in rows:
        print(f"{what:42} {n:6d} {line_b:7.0f} {event_b:8.0f} {usd:20.4f}")
    print(f"sampled / every request (Serve's lines): {rows[2][4] / rows[0][4]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

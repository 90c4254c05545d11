"""What the replica's own metrics cost a request, as a ratio of what the model costs it, in one run.

    .venv/bin/python bench/metrics.py            # ~1 minute on 2 cores

Both figures are CPU time of this process, measured one after the other:

* metrics — the calls a replica makes per request (``ReplicaMetrics.request``: two histograms, three counters)
  and per forward (``ReplicaMetrics.forward``: one histogram, five counters), through Ray 2.60's
  ``ray.util.metrics`` in a process connected to a private local Ray (as a replica is); per request at batch 1
  (one forward per request: the most metric calls per request) and at batch 8;
* model   — the engine (tokenize → forward → pooled vectors) of the bundled model on one thread, per request at
  batch 1 and batch 8: a lower bound of a replica's cost per request (HTTP, JSON and Serve come on top).

Prints both and their ratio per request at each batch size.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gpu.common import corpus  # noqa: E402
from bench.serving import build_engine  # noqa: E402


def cpu_per_call(fn: Callable[[], object], n: int) -> float:
    fn()
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n


def metrics_per_request(batch: int) -> float:
    from eks_inference.serving.metrics import ReplicaMetrics

    metrics = ReplicaMetrics(application="bench", replica="r1")

    def one_batch() -> None:
        metrics.forward(rows=batch, batch=batch, seq=32, real_tokens=batch * 20, seconds=0.004)
        for _ in range(batch):
            metrics.request(0.001, 0.004)

    return cpu_per_call(one_batch, 20_000 // batch) / batch


def main() -> int:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    temp = tempfile.mkdtemp(prefix="eki-bm-", dir="/tmp")
    ray.init(address="local", num_cpus=1, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    try:
        cost = {b: metrics_per_request(b) for b in (1, 8)}
    finally:
        ray.shutdown()
    engine = build_engine(threads=1)
    texts = corpus()
    for batch in (1, 8):
        model = cpu_per_call(lambda b=batch: engine.run(texts[:b]), max(20, 200 // batch)) / batch
        print(f"batch {batch}: metrics {cost[batch] * 1e6:,.1f} µs/request, model {model * 1e3:,.2f} ms/request "
              f"(one thread): metrics / model = {cost[batch] / model:.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

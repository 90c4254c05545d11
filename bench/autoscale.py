"""Autoscaling benchmark on this machine: how fast Serve adds a replica for a step in load, and what the step
costs in tail latency while it does. One run, figures measured in it.

    .venv/bin/python bench/autoscale.py            # ~3 minutes on 2 cores
    .venv/bin/python bench/autoscale.py --quick    # shorter segments

The bundled model is served by a private local Ray with the serve config ``render_serve_config`` writes
(autoscaling 1..2 replicas, the target derived from the batch size, delays shortened to seconds and printed).
One replica's capacity is measured first (a short closed loop); then the project's load tester plays one
schedule: a low rate, a step to 1.3 × that capacity (more than one replica holds), the same rate again once
the second replica serves, and a low rate to watch it leave. The load tester samples ``/info`` every second.

Prints:
* time to serve — seconds from the step to the first second ``/info`` reports two replicas running;
* p99 ratio — p99 of the requests due in the first segment after the step (the scale-out) over p99 at the same
  rate in the next segment (two replicas, steady), both from the segments' own HDR histograms;
* time to scale in — seconds from the drop to one replica running again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eks_inference.config import ModelSpec, Processor, ServingSpec, Task  # noqa: E402
from eks_inference.loadgen import runner  # noqa: E402
from eks_inference.loadgen.payloads import generate_payloads, parse_length_dist  # noqa: E402
from eks_inference.loadgen.run_config import RunConfig  # noqa: E402
from eks_inference.measure.schedule import Segment  # noqa: E402
from eks_inference.measure.spec import Mode, TargetInfo  # noqa: E402
from eks_inference.measure.stats import decode, percentiles_us  # noqa: E402
from eks_inference.measure.steps import summarize  # noqa: E402
from eks_inference.serving.local import LocalRay, free_port  # noqa: E402
from eks_inference.serving.serve_config import render_serve_config  # noqa: E402

NAME = "bench-autoscale"
CACHE = ROOT / ".eks-inference" / "bench"


def serving(quick: bool) -> ServingSpec:
    return ServingSpec(max_batch_size=8, batch_wait_timeout_s=0.0, num_threads=1, min_replicas=1, max_replicas=2,
                       upscale_delay_s=2.0, downscale_delay_s=6.0 if quick else 10.0, look_back_period_s=11.0)


def run_config(url: str, **kw: Any) -> RunConfig:
    base: dict[str, Any] = dict(url=url, mode=Mode.OPEN, target=TargetInfo(name=NAME, url=url),
                                out=str(CACHE / "unused.json"), run_id="bench", warmup_s=0.0, timeout_s=30.0)
    base.update(kw)
    return RunConfig(**base)


def wait_for_one_replica(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/info", timeout=5) as r:
            if json.loads(r.read())["replicas"]["running"] == 1:
                return
        time.sleep(1.0)
    raise SystemExit("the model did not settle at one replica")


def p99_ms(hist: str) -> float:
    return percentiles_us(decode(hist))["p99"] / 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter segments")
    a = parser.parse_args()
    spec = serving(a.quick)
    model = ModelSpec(name=NAME, task=Task.EMBEDDING, processors=(Processor.CPU,), serving=spec)
    ray = LocalRay(http_host="127.0.0.1", http_port=free_port()).start()
    try:
        cfg = render_serve_config(model, Processor.CPU, model_uri="bundled:all-minilm-l6-v2",
                                  artifact_uri=str(CACHE / "repo"), cache_dir=str(CACHE / "cache"),
                                  http_host="127.0.0.1", http_port=ray.http_port)
        ray.deploy(cfg)
        ray.wait_ready(NAME, timeout_s=600)
        url = f"{ray.url}/{NAME}"
        payloads = generate_payloads(parse_length_dist("uniform:8-64"), inputs_per_request=1, seed=0)
        scaling = cfg["applications"][0]["deployments"][0]["autoscaling_config"]
        print(f"autoscaling_config: {scaling}")

        cal = asyncio.run(runner.run(run_config(url, mode=Mode.CLOSED, concurrencies=(8,), duration_s=5.0,
                                                warmup_s=2.0), payloads))
        one = summarize([cal.steps[0].client_step(run_config(url, rates=(1.0,), duration_s=1.0))])
        capacity = one["throughput_rps"]
        print(f"one replica: {capacity:.1f} req/s at concurrency 8 (p99 {one['latency_ms']['p99']:.1f} ms)")
        # The calibration may have scaled out, and its load stays in Serve's look-back window for a while: start
        # the schedule from one replica and a window that holds no calibration.
        wait_for_one_replica(url)
        time.sleep(spec.look_back_period_s + 5)
        wait_for_one_replica(url)

        low, high = round(0.3 * capacity, 1), round(1.3 * capacity, 1)
        seg = 20.0 if a.quick else 30.0
        lead = 20.0
        schedule = (Segment(low, low, lead), Segment(high, high, seg), Segment(high, high, seg),
                    Segment(low, low, seg))
        out = asyncio.run(runner.run(run_config(url, duration_s=sum(s.seconds for s in schedule),
                                                schedule=schedule, sample_replicas=True), payloads))
        (step,) = out.steps
        started = step.started_at
        samples = [(s["t"] - started, s["running"]) for s in step.replicas if s.get("running") is not None]
        t_step, t_drop = lead, lead + 2 * seg
        before = [n for t, n in samples if t_step - 5 <= t < t_step]
        if not before or max(before) != 1:
            print(f"note: {max(before or [0])} replicas ran in the 5 s before the step; the low rate was not low "
                  "enough for one replica, so the time to serve below is not a step response")
        up = next((t for t, n in samples if t >= t_step and n >= 2), None)
        down = next((t for t, n in samples if t >= t_drop and n <= 1), None)
        segs = {i: st for i, _, st in step.segments}
        scale_out_p99, steady_p99 = p99_ms(segs[1].latency_hist), p99_ms(segs[2].latency_hist)
        errors = sum(st.errors for st in segs.values())
        print(f"schedule: {low:g} req/s for {lead:g} s, {high:g} req/s for 2 × {seg:g} s, {low:g} req/s for {seg:g} s; "
              f"{step.stats.ok:,} ok, {errors} errors")
        print("replicas running/wanted by second: " + " ".join(
            f"{s['t'] - started:.0f}:{s['running']}/{s.get('target')}" for s in step.replicas
            if s.get("running") is not None))
        print(f"time to serve: {'not within the segment' if up is None else f'{up - t_step:.1f} s'} from the step "
              "to a second replica running")
        print(f"p99 during scale-out / steady p99 at {high:g} req/s: {scale_out_p99:.1f} ms / {steady_p99:.1f} ms = "
              f"{scale_out_p99 / steady_p99:.2f}")
        print(f"time to scale in: {'not within the segment' if down is None else f'{down - t_drop:.1f} s'} from the "
              f"drop to one replica (downscale_delay_s {spec.downscale_delay_s:g})")
        return 0
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())

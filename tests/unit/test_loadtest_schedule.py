"""Rate schedules: parsing, the send times they give (constant and Poisson), the runner following them on a real
socket, per-segment statistics, replica samples and their per-second merge."""

from __future__ import annotations

import asyncio
import math
import random
import subprocess
import sys
from typing import Any

import pytest

from eks_inference.analysis.timeline import merge_samples, merge_seconds, rows
from eks_inference.config import ConfigError
from eks_inference.loadgen import runner
from eks_inference.loadgen.payloads import generate_payloads, parse_length_dist
from eks_inference.loadgen.replicas import parse_sample
from eks_inference.loadgen.run_config import RunConfig
from eks_inference.measure.schedule import RateSchedule, Segment, build_schedule, parse_ramp, parse_schedule
from eks_inference.measure.spec import Mode, StepSpec, TargetInfo
from eks_inference.measure.stats import SecondBucket


def test_parse_steps_and_ramps() -> None:
    assert parse_schedule("10:30,40:60,10:60") == (Segment(10, 10, 30), Segment(40, 40, 60), Segment(10, 10, 60))
    assert parse_schedule("5-40:120, 0:10") == (Segment(5, 40, 120), Segment(0, 0, 10))
    assert parse_ramp("5:40:120") == Segment(5, 40, 120)
    assert build_schedule("10:30", "10:50:20") == (Segment(10, 10, 30), Segment(10, 50, 20))
    assert build_schedule(None, None) == ()


@pytest.mark.parametrize(("schedule", "ramp", "message"), [
    ("10", None, r"--schedule: '10' in '10' is not RATE:SECONDS or FROM-TO:SECONDS; write e.g. 10:30,40:60"),
    ("10:0", None, r"--schedule: 0 s in '10:0' is not in \(0, 86400\] seconds"),
    ("0:10", None, r"--schedule: every segment has rate 0, so nothing would be sent"),
    (None, "5:40", r"--ramp: '5:40' is not FROM:TO:SECONDS; write e.g. 5:40:120"),
])
def test_bad_schedules_say_the_fix(schedule: str | None, ramp: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_schedule(schedule, ramp)


def test_constant_spacing_within_each_segment() -> None:
    s = RateSchedule((Segment(10, 10, 2), Segment(40, 40, 1)))
    assert s.total_requests == 60 and s.total_s == 3
    assert [s.time_at(n) for n in (0, 1, 19)] == [0.0, 0.1, 1.9]
    assert s.time_at(20) == pytest.approx(2.0) and s.time_at(21) == pytest.approx(2.025)
    assert s.time_at(60) is None


def test_a_ramp_sends_what_its_rate_integrates_to() -> None:
    """Along a ramp from 0 to 20 req/s over 10 s, Λ(t) = t²: send n is due at sqrt(n), 100 sends in all."""
    s = RateSchedule((Segment(0, 20, 10),))
    assert s.total_requests == 100
    for n in (1, 4, 25, 81):
        assert s.time_at(n) == pytest.approx(math.sqrt(n))
    down = RateSchedule((Segment(20, 0, 10),))  # and falling: Λ(t) = 20t − t²
    assert down.time_at(75) == pytest.approx(5.0)
    assert s.rate_at(2.5) == pytest.approx(5.0) and s.segment_of(9.99) == 0


def test_poisson_through_the_time_change_keeps_the_rate() -> None:
    """Unit exponential gaps on Λ mapped through Λ⁻¹ give, on average, the schedule's count in each segment."""
    s = RateSchedule((Segment(50, 50, 20), Segment(200, 200, 20)))
    rng, u, times = random.Random(7), 0.0, []
    while (t := s.time_at(u := u + rng.expovariate(1.0))) is not None:
        times.append(t)
    first = sum(t < 20 for t in times)
    assert abs(first - 1000) < 4 * math.sqrt(1000) and abs(len(times) - first - 4000) < 4 * math.sqrt(4000)


def config(**kw: Any) -> RunConfig:
    base: dict[str, Any] = dict(url="http://127.0.0.1:1/m", mode=Mode.OPEN, target=TargetInfo(name="m", url="x"),
                                out="/tmp/x.json", run_id="r1", duration_s=20.0, warmup_s=0.0,
                                schedule=(Segment(5, 5, 10), Segment(20, 20, 10)))
    base.update(kw)
    return RunConfig(**base)


def test_a_schedule_is_one_step_at_its_mean_rate() -> None:
    (step,) = config(clients=2).sweep()
    assert step.rate == 12.5 and step.client_rate == 6.25 and step.duration_s == 20
    assert step.client_schedule == RateSchedule((Segment(2.5, 2.5, 10), Segment(10, 10, 10)))
    assert StepSpec.from_dict(step.to_dict()) == step
    assert step.label == "schedule 5 req/s × 10 s, 20 req/s × 10 s (constant)"
    assert "schedule" not in config(schedule=(), rates=(5.0,)).sweep()[0].to_dict()


@pytest.mark.parametrize(("kw", "message"), [
    ({"rates": (5.0,)}, r"--schedule/--ramp: the schedule is the load; drop --rate/--rates"),
    ({"duration_s": 5.0}, r"--schedule/--ramp: the run lasts the schedule's 20 s; drop --duration"),
    ({"warmup_s": 20.0, "duration_s": 0.0001}, r"--duration"),
])
def test_a_schedule_excludes_other_loads(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(**kw)


def test_samples_keep_the_counts_or_say_why_not() -> None:
    ok = parse_sample(100.25, 200, {"replicas": {"running": 2, "target": 3, "min": 1, "max": 4}}, 0.004)
    assert ok == {"t": 100.25, "ms": 4.0, "running": 2, "target": 3, "min": 1, "max": 4}
    assert parse_sample(1.0, 503, {}, 0.1)["error"] == "HTTP 503"
    assert parse_sample(1.0, 200, {"model": "m"}, 0.1)["error"] == "no replica counts in /info"
    assert parse_sample(1.0, 200, {"replicas": {"running": None, "error": "boom"}}, 0.1)["error"] == "boom"


def test_seconds_merge_across_clients() -> None:
    a = [SecondBucket(t=10, ok=3, errors=0, latency_sum_us=3000, latency_max_us=2000)]
    b = [SecondBucket(t=10, ok=1, errors=1, latency_sum_us=5000, latency_max_us=5000),
         SecondBucket(t=11, ok=2, errors=0, latency_sum_us=2000, latency_max_us=1500)]
    seconds = merge_seconds([a, b])
    samples = merge_samples([{"t": 10.1, "running": 1, "target": 2}, {"t": 10.6, "running": 2, "target": 2},
                             {"t": 11.0, "error": "timeout"}])
    out = rows(started_at=10.0, schedule=(Segment(4, 4, 2),), seconds=seconds, samples=samples)
    assert [(r["second"], r["offered_rps"], r["ok"], r["errors"], r["mean_ms"], r["max_ms"], r["replicas_running"])
            for r in out] == [(0, 4.0, 4, 1, 2.0, 5.0, 2), (1, 4.0, 2, 0, 1.0, 1.5, None)]


@pytest.mark.integration
def test_the_runner_follows_a_schedule_and_samples_replicas(tmp_path: Any) -> None:
    """Against the stub server: a 2 s step at 20 req/s then a 2 s ramp to 60 sends what the schedule integrates
    to (40 + 80), each segment keeps its own statistics, and /info is sampled about once a second."""
    proc = subprocess.Popen([sys.executable, "-m", "eks_inference.loadgen.stub_server", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        cfg = config(url=f"http://127.0.0.1:{port}/m", duration_s=4.0,
                     schedule=(Segment(20, 20, 2), Segment(20, 60, 2)), sample_replicas=True)
        payloads = generate_payloads(parse_length_dist("fixed:4"), inputs_per_request=1, seed=0)
        outcome = asyncio.run(runner.run(cfg, payloads))
    finally:
        proc.terminate()
        proc.wait(10)
    assert outcome.status == "complete", outcome.error
    (step,) = outcome.steps
    assert step.stats.ok == 120 and step.stats.errors == 0
    assert [(i, st.ok) for i, _, st in step.segments] == [(0, 40), (1, 80)]
    assert 3 <= len(step.replicas) <= 6 and all("error" in s for s in step.replicas)  # the stub reports none

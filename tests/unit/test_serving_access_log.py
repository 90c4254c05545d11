"""The sampled access log: every failure, a seeded share of the rest, each line weighted so counts can be estimated;
a bad sample setting is refused naming the variable."""

from __future__ import annotations

import io
import json
import random

import pytest

from eks_inference.config import ConfigError
from eks_inference.serving.access_log import DEFAULT_SAMPLE, SAMPLE_ENV, AccessLog, sample_from_env


def test_every_failure_and_about_the_sampled_share_of_the_rest_are_written() -> None:
    """GIVEN a 1-in-20 sample WHEN 4,000 successes and 50 failures are recorded THEN all 50 failures (weight 1) and a
    share of the successes near 1/20 (weight 20) are written, and the weights estimate the successes' count."""
    out = io.StringIO()
    log = AccessLog(0.05, stream=out, rng=random.Random(7))
    for i in range(4000):
        log.record(model="m", route="/predict", status=200, ms=3.0 + i % 5)
    for _ in range(50):
        log.record(model="m", route="/predict", status=503, ms=1.0)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    ok = [x for x in lines if x["status"] == 200]
    failed = [x for x in lines if x["status"] == 503]
    assert len(failed) == 50 and {x["weight"] for x in failed} == {1.0}
    assert 140 <= len(ok) <= 260 and {x["weight"] for x in ok} == {20.0}
    assert 2800 <= sum(x["weight"] for x in ok) <= 5200
    assert log.written == len(lines)


def test_a_zero_sample_keeps_failures_only() -> None:
    out = io.StringIO()
    log = AccessLog(0.0, stream=out)
    assert not log.record(model="m", route="/predict", status=200, ms=1.0)
    assert log.record(model="m", route="/predict", status=500, ms=1.0)
    assert len(out.getvalue().splitlines()) == 1


def test_the_sample_comes_from_the_environment_and_bad_values_are_refused() -> None:
    assert sample_from_env({}) == DEFAULT_SAMPLE
    assert sample_from_env({SAMPLE_ENV: "0.25"}) == 0.25
    for bad in ("2", "-0.1", "often"):
        with pytest.raises(ConfigError, match=rf"{SAMPLE_ENV}: '{bad}' is not a share between 0 and 1"):
            sample_from_env({SAMPLE_ENV: bad})

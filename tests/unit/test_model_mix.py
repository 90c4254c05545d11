"""The load tester's model mix (seeded, uniform or Zipf), the byte-bounded eviction plan of a family's replica,
and the cold/warm split of a step's latency, merged exactly across clients."""

from __future__ import annotations

from collections import Counter

import pytest

from eks_inference.config import ConfigError
from eks_inference.loadgen.model_mix import check_ids, default_ids, draw, parse_mix, request_headers
from eks_inference.measure.stats import StepRecorder, StepStats
from eks_inference.serving.model_cache import TooLarge, evictions, over_budget


def test_mixes_parse_and_refuse_in_one_line() -> None:
    assert parse_mix("uniform").label == "uniform"
    assert parse_mix("zipf:1.1").exponent == 1.1
    with pytest.raises(ConfigError, match=r"--model-mix: 'zipf' is not a model mix; use uniform or zipf:S"):
        parse_mix("zipf")
    with pytest.raises(ConfigError, match=r"zipf exponent 0 must be in \(0, 10\]"):
        parse_mix("zipf:0")
    with pytest.raises(ConfigError, match=r"--models: 0 must be a whole number"):
        default_ids(0)
    with pytest.raises(ConfigError, match=r"repeats an id"):
        check_ids(["a", "a"])
    assert default_ids(3) == ["m000", "m001", "m002"]


def test_the_draw_is_seeded_and_follows_the_shares() -> None:
    ids = default_ids(50)
    zipf = parse_mix("zipf:1.1")
    a, b = draw(zipf, ids, seed=1), draw(zipf, ids, seed=1)
    assert a == b and a != draw(zipf, ids, seed=2)
    counts = Counter(a)
    shares = zipf.shares(50)
    # rank 1 takes about a fifth of the requests under Zipf(1.1) over 50 models; the tail far less
    assert abs(counts["m000"] / len(a) - shares[0]) < 0.02
    assert counts["m000"] > 5 * counts.get("m020", 0)
    uniform = Counter(draw(parse_mix("uniform"), ids, seed=1))
    assert max(uniform.values()) < 3 * min(uniform.values())
    assert request_headers(["m001"]) == [{"serve_multiplexed_model_id": "m001"}]


def test_evictions_are_planned_in_bytes_least_recent_first() -> None:
    held = [("a", 40), ("b", 30), ("c", 20)]
    assert evictions(held, 10, 100) == 0
    assert evictions(held, 20, 100) == 1  # a (40) goes: 30 + 20 + 20 = 70
    assert evictions(held, 90, 100) == 3
    with pytest.raises(TooLarge, match="more than the replica's whole memory budget"):
        evictions(held, 101, 100)
    assert over_budget([("a", 40), ("b", 30), ("c", 50)], 100) == 1
    assert over_budget([("big", 150)], 100) == 0  # the member just loaded always stays


def test_cold_and_warm_latency_are_kept_apart_and_round_trip() -> None:
    rec = StepRecorder(window_start=100.0)
    for i in range(10):
        rec.record_ok(0.5 if i < 2 else 0.01, 100.5 + i * 0.1, cold=i < 2)
    st = rec.finish(window_s=2.0)
    assert (st.ok, st.cold) == (10, 2)
    again = StepStats.from_dict(st.to_dict())
    assert again == st
    plain = StepRecorder(window_start=0.0)
    plain.record_ok(0.01, 0.5)
    assert plain.finish(window_s=1.0).cold_hist is None
    assert "family" not in plain.finish(window_s=1.0).to_dict()

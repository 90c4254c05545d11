"""HDR statistics: percentiles against exact numpy, exact merging across client files, per-second series."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eks_inference.measure import stats
from eks_inference.measure.results import FORMAT, FORMAT_VERSION, load_results
from eks_inference.measure.spec import Arrival, Mode, StepSpec, TargetInfo
from eks_inference.measure.stats import StepRecorder
from eks_inference.measure.steps import ClientStep, summarize
from eks_inference.storage import read_inputs

T0 = 1_800_000_000.0  # an epoch second, far from any real clock, so nothing depends on "now"
RELATIVE_PRECISION = 2.0 ** -10  # 3 significant digits: sub-buckets of 1/1024 of a power of two


def _latencies(n: int, seed: int) -> np.ndarray:
    """Seconds, lognormal with a long tail (median ~5 ms, some beyond 1 s)."""
    rng = np.random.default_rng(seed)
    return np.exp(rng.normal(np.log(0.005), 1.2, n))


def _record(samples_s: np.ndarray, *, start: float = T0, span_s: float = 10.0) -> stats.StepStats:
    rec = StepRecorder(window_start=start)
    done = start + np.linspace(0, span_s, len(samples_s), endpoint=False)
    for lat, t in zip(samples_s, done, strict=True):
        rec.record_ok(float(lat), float(t))
    return rec.finish(window_s=span_s)


@pytest.mark.parametrize("seed", [1, 2])
def test_percentiles_match_exact_numpy_within_hdr_precision(seed: int) -> None:
    samples = _latencies(200_000, seed)
    st = _record(samples)
    hist = stats.decode(st.latency_hist)
    exact_us = np.array([stats.to_us(float(x)) for x in samples])
    ordered = np.sort(exact_us)
    got = stats.percentiles_us(hist)
    for name, p in stats.PERCENTILES.items():
        # The sample of rank round(p·N/100), the definition HdrHistogram uses; HDR reports the top of
        # that sample's bucket, so it may exceed the sample by the bucket width and never undershoot.
        exact = float(ordered[max(1, int(p * len(samples) / 100 + 0.5)) - 1])
        assert exact <= got[name] <= exact * (1 + RELATIVE_PRECISION) + 1, (name, exact, got[name])
        near = float(np.percentile(exact_us, p, method="nearest"))
        assert abs(got[name] - near) <= near * 2 * RELATIVE_PRECISION + 1
    library = hist.get_percentile_to_value_dict(list(stats.PERCENTILES.values()))
    assert got == {name: library[p] for name, p in stats.PERCENTILES.items()}
    summary = stats.latency_summary_ms(hist, min_us=st.min_us, max_us=st.max_us, sum_us=st.sum_us)
    assert summary["max"] == exact_us.max() / 1000  # exact, not bucketed
    assert summary["min"] == exact_us.min() / 1000
    assert summary["mean"] == pytest.approx(exact_us.mean() / 1000, rel=1e-12)
    assert hist.get_total_count() == len(samples)


def test_percentiles_are_not_averages_of_client_percentiles() -> None:
    """Why we merge histograms: one slow client's tail vanishes in an average of p99s."""
    fast = _record(_latencies(9_000, 3) * 0.2)
    slow = _record(_latencies(1_000, 4) * 20)
    merged = stats.percentiles_us(stats.merge([fast.latency_hist, slow.latency_hist]))["p99"]
    averaged = (stats.percentiles_us(stats.decode(fast.latency_hist))["p99"]
                + stats.percentiles_us(stats.decode(slow.latency_hist))["p99"]) / 2
    everything = np.concatenate([_latencies(9_000, 3) * 0.2, _latencies(1_000, 4) * 20])
    ordered = np.sort([stats.to_us(float(x)) for x in everything])
    exact = float(ordered[int(0.99 * len(ordered) + 0.5) - 1])
    assert merged == pytest.approx(exact, rel=RELATIVE_PRECISION)
    assert abs(averaged - exact) / exact > 0.2


def _doc(step_stats: stats.StepStats, index: int, clients: int) -> dict[str, object]:
    spec = StepSpec(index=0, mode=Mode.OPEN, arrival=Arrival.CONSTANT, rate=100.0, concurrency=None,
                    client_rate=100.0 / clients, client_concurrency=None, duration_s=10.0, requests=None, warmup_s=0)
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "run_id": "r1", "status": "complete",
        "target": TargetInfo(name="t", url="http://127.0.0.1:1/t").to_dict(),
        "client": {"index": index, "count": clients},
        "steps": [{"spec": spec.to_dict(), "stats": step_stats.to_dict(), "client": {}}],
    }


def test_merging_client_files_equals_one_histogram_of_all_samples(tmp_path: Path) -> None:
    samples = _latencies(60_000, 5)
    parts = np.array_split(samples, 4)
    for i, part in enumerate(parts):
        st = _record(part, start=T0 + 0.1 * i)  # clients start a little apart, as pods do
        (tmp_path / f"client-{i}.json").write_text(json.dumps(_doc(st, i, len(parts))))
    parsed, skipped = load_results(read_inputs([str(tmp_path)]))
    assert not skipped
    steps = [s for r in parsed for s in r.steps]
    merged = stats.merge(s.stats.latency_hist for s in steps)
    single = stats.decode(_record(samples).latency_hist)

    def recorded(h: object) -> list[tuple[int, int]]:
        return [(v.value_iterated_to, v.count_at_value_iterated_to) for v in h.get_recorded_iterator()]  # type: ignore[attr-defined]

    assert recorded(merged) == recorded(single)
    assert merged.get_total_count() == single.get_total_count() == len(samples)
    summary = summarize(steps)
    one = summarize([ClientStep(source="x", run_id="r1", client_index=0, clients=1,
                                target=steps[0].target, spec=steps[0].spec, stats=_record(samples))])
    assert summary["latency_ms"] == one["latency_ms"]
    assert summary["ok"] == one["ok"] == len(samples)
    assert summary["clients"] == 4


def test_per_second_series_counts_every_outcome_and_fills_gaps() -> None:
    rec = StepRecorder(window_start=T0 + 0.3)
    rec.record_ok(0.002, T0 + 0.5)
    rec.record_error("http_503", T0 + 0.9)
    rec.record_ok(0.004, T0 + 3.2)  # seconds 1 and 2 saw nothing
    rec.record_error("timeout", T0 + 3.7)
    st = rec.finish(window_s=4.0)
    assert [(b.t, b.ok, b.errors) for b in st.series] == [
        (int(T0), 1, 1), (int(T0) + 1, 0, 0), (int(T0) + 2, 0, 0), (int(T0) + 3, 1, 1)]
    assert sum(b.ok for b in st.series) == st.ok == 2
    assert st.errors_by_kind == {"http_503": 1, "timeout": 1}
    assert [(b.latency_sum_us, b.latency_max_us) for b in st.series] == [(2000, 2000), (0, 0), (0, 0), (4000, 4000)]


def test_fast_recording_is_identical_to_the_library() -> None:
    """The inlined bucket arithmetic must put every value where HdrHistogram itself would."""
    rng = np.random.default_rng(9)
    values = np.concatenate([rng.integers(0, 5000, 3000), rng.integers(0, stats.HIST_HIGHEST_US, 3000),
                             2 ** np.arange(0, 31), 2 ** np.arange(1, 31) - 1]).astype(int)
    fast = stats.FastRecorder(stats.new_histogram())
    slow = stats.new_histogram()
    for v in values:
        fast.record(int(v))
        slow.record_value(int(v))
    h = fast.histogram()
    assert list(h.counts) == list(slow.counts)
    assert (h.get_total_count(), h.get_min_value(), h.get_max_value()) == (
        slow.get_total_count(), slow.get_min_value(), slow.get_max_value())
    assert stats.encode(h) == stats.encode(slow)


def test_values_beyond_the_range_are_clamped_not_dropped() -> None:
    rec = StepRecorder(window_start=T0)
    rec.record_ok(10_000.0, T0 + 1)  # ~3 hours
    rec.record_ok(-0.001, T0 + 1)  # clock weirdness
    st = rec.finish(window_s=1.0)
    assert stats.decode(st.latency_hist).get_total_count() == 2
    assert st.max_us == stats.HIST_HIGHEST_US and st.min_us == 0


def test_common_window_and_whole_seconds() -> None:
    assert stats.common_window([(10.2, 20.2), (10.7, 19.9)]) == (10.7, 19.9)
    assert stats.common_window([(0, 1), (2, 3)]) is None
    series = [stats.SecondBucket(t=t, ok=t - 9, errors=0) for t in range(10, 21)]
    ok, seconds = stats.ok_in_window(series, 10.7, 19.9)
    assert seconds == 8  # 11..18
    assert ok == sum(t - 9 for t in range(11, 19))


def test_throughput_sums_clients_over_their_common_window() -> None:
    """Two clients at 50 and 150 req/s over overlapping windows: 200 req/s, not an average."""
    def client(i: int, rate: float, start: float) -> ClientStep:
        rec = StepRecorder(window_start=start)
        n = int(rate * 10)
        for k in range(n):
            rec.record_ok(0.001, start + k / rate)
        spec = StepSpec(index=0, mode=Mode.OPEN, arrival=Arrival.CONSTANT, rate=200.0, concurrency=None,
                        client_rate=rate, client_concurrency=None, duration_s=10.0, requests=None, warmup_s=0)
        return ClientStep(source=f"c{i}", run_id="r", client_index=i, clients=2,
                          target=TargetInfo(name="t", url="u"), spec=spec, stats=rec.finish(window_s=10.0))

    s = summarize([client(0, 50.0, T0), client(1, 150.0, T0 + 0.4)])
    assert s["throughput_rps"] == pytest.approx(200.0, rel=1e-9)
    assert "common window of 9 s" in s["throughput_method"]
    assert s["requests"] == 2000


def test_throughput_is_what_was_achieved_not_what_was_offered() -> None:
    """1000 requests offered over 10 s to a server that only manages 50/s: they complete over 20 s."""
    rec = StepRecorder(window_start=T0)
    for k in range(1000):
        intended, done = T0 + k / 100, T0 + 0.01 + k / 50
        rec.record_ok(done - intended, done)
    st = rec.finish(window_s=10.0)
    assert stats.achieved_rps(st) == pytest.approx(50, rel=0.01)
    healthy = _record(np.full(1000, 0.004), span_s=10.0)  # kept up: exactly the offered 100/s
    assert stats.achieved_rps(healthy) == pytest.approx(100, rel=1e-9)

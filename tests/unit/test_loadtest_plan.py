"""Run configuration: validation messages, client shares, the SLO search."""

from __future__ import annotations

from typing import Any

import pytest

from eks_inference.config import ConfigError
from eks_inference.loadgen.client import parse_endpoint
from eks_inference.loadgen.run_config import RunConfig, SearchSpec, parse_concurrencies, parse_rates
from eks_inference.measure.schedule import Segment
from eks_inference.measure.spec import Mode, TargetInfo

URL = "http://127.0.0.1:8000/minilm"


def _config(**kw: Any) -> RunConfig:
    base: dict[str, Any] = {"url": URL, "mode": Mode.OPEN, "target": TargetInfo(name="minilm", url=URL),
                            "out": "x.json", "run_id": "r1", "rates": (10.0,)}
    base.update(kw)
    return RunConfig(**base)


def test_rates_and_concurrencies_parse() -> None:
    assert parse_rates("10, 20.5,40") == (10.0, 20.5, 40.0)
    assert parse_concurrencies("1,4,16") == (1, 4, 16)


@pytest.mark.parametrize("text, match", [
    ("10,-5", "'-5' is not a rate"), ("abc", "'abc' in 'abc' is not a number"), ("0", "not a rate"),
    ("10,,20", "'' in '10,,20' is not a number"), ("inf", "not a rate"), ("nan", "not a rate"),
])
def test_invalid_rates_say_which_value_and_what_to_do(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_rates(text)


@pytest.mark.parametrize("text, match", [("0", "0 is outside"), ("1.5", "'1.5' .* not a whole number"),
                                         ("4,-1", "-1 is outside"), ("x", "not a whole number")])
def test_invalid_concurrencies(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_concurrencies(text)


@pytest.mark.parametrize("kw, match", [
    ({"concurrencies": (4,)}, "only for --mode closed"),
    ({"rates": ()}, "needs --rate"),
    ({"mode": Mode.CLOSED, "rates": ()}, "needs --concurrency"),
    ({"mode": Mode.CLOSED, "concurrencies": (2,), "rates": (1.0, 2.0)}, "at most one --rate"),
    ({"duration_s": None}, "exactly one of --duration"),
    ({"requests": 10}, "exactly one of --duration"),
    ({"duration_s": 0.0}, "--duration"),
    ({"warmup_s": -1.0}, "--warmup"),
    ({"timeout_s": 0.0}, "--timeout"),
    ({"clients": 2, "client_index": 2}, "--client-index: 2 must be in 0..1"),
    ({"mode": Mode.CLOSED, "rates": (), "concurrencies": (2,), "clients": 3}, "below --clients 3"),
    ({"run_id": "no spaces"}, "--run-id"),
    ({"max_error_rate": 1.5}, "--max-error-rate"),
    ({"search": SearchSpec(slo_p99_ms=50), "clients": 2}, "each client would search on its own"),
])
def test_invalid_run_configs(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _config(**kw)


def test_target_validation() -> None:
    with pytest.raises(ConfigError, match="--processor: 'tpu'"):
        TargetInfo(name="x", url=URL, processor="tpu")
    with pytest.raises(ConfigError, match="--nodes"):
        TargetInfo(name="x", url=URL, nodes=0)
    with pytest.raises(ConfigError, match="--target-name"):
        TargetInfo(name="a b", url=URL)


@pytest.mark.parametrize("url", ["ftp://host/x", "127.0.0.1:8000/x", "http:///x", "http://h:99999/x",
                                 "http://h/x?q=1"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="--url"):
        parse_endpoint(url)


def test_endpoint_accepts_a_predict_url_too() -> None:
    ep = parse_endpoint("http://127.0.0.1:8000/minilm/predict/")
    assert ep.url == URL and ep.predict_path == "/minilm/predict" and ep.info_url == URL + "/info"
    assert parse_endpoint("https://example.com/m").host_header == "example.com"


@pytest.mark.parametrize("clients", [1, 2, 3, 7])
def test_client_shares_add_up_to_the_totals(clients: int) -> None:
    conc, requests, rate = 16, 1001, 90.0
    closed = [_config(mode=Mode.CLOSED, rates=(), concurrencies=(conc,), clients=clients, client_index=i,
                      duration_s=None, requests=requests) for i in range(clients)]
    assert sum(c.sweep()[0].client_concurrency or 0 for c in closed) == conc
    assert sum(c.sweep()[0].requests or 0 for c in closed) == requests
    opened = [_config(rates=(rate,), clients=clients, client_index=i) for i in range(clients)]
    assert sum(c.sweep()[0].client_rate or 0 for c in opened) == pytest.approx(rate)
    assert all(c.sweep()[0].rate == rate for c in opened)  # the step is labelled with the total


def test_connection_limit_follows_the_load() -> None:
    assert _config(mode=Mode.CLOSED, rates=(), concurrencies=(12,)).connection_limit(
        _config(mode=Mode.CLOSED, rates=(), concurrencies=(12,)).sweep()[0]) == 12
    c = _config(rates=(1000.0,))
    assert c.connection_limit(c.sweep()[0]) == 500
    c = _config(rates=(50_000.0,))
    assert c.connection_limit(c.sweep()[0]) == 1024
    c = _config(rates=(5.0,))
    assert c.connection_limit(c.sweep()[0]) == 64
    c = _config(rates=(5.0,), connections=3)
    assert c.connection_limit(c.sweep()[0]) == 3


def _search(capacity: float, spec: SearchSpec) -> list[float]:
    """Drive the search against a server that meets the SLO up to ``capacity`` req/s."""
    history: list[tuple[float, bool]] = []
    while (rate := spec.next_rate(history)) is not None:
        history.append((rate, rate <= capacity))
        assert len(history) < 50
    return [r for r, _ in history]


def test_search_doubles_then_bisects() -> None:
    spec = SearchSpec(slo_p99_ms=100, start_rate=10, max_rate=10_000, refine_steps=3)
    tried = _search(137.0, spec)
    assert tried[:5] == [10, 20, 40, 80, 160]
    assert tried[5:] == [120, 140, 130]  # three bisections between the last pass and the first fail
    best = max(r for r in tried if r <= 137)
    assert best == 130


def test_search_goes_down_when_the_start_rate_fails() -> None:
    tried = _search(3.0, SearchSpec(slo_p99_ms=100, start_rate=10, refine_steps=1))
    assert tried[:3] == [10, 5, 2.5]
    assert tried[3] == 3.75


def test_search_stops_at_max_rate_and_when_nothing_passes() -> None:
    assert _search(1e9, SearchSpec(slo_p99_ms=1, start_rate=100, max_rate=500)) == [100, 200, 400, 500]
    assert _search(0.0, SearchSpec(slo_p99_ms=1, start_rate=16)) == [16, 8, 4, 2, 1]


def test_constant_schedule_window_is_decided_on_indices() -> None:
    """The flaky 76-instead-of-75: with the step starting at monotonic time 31.277 (t_start = loop time +
    2 ms), send 90 is due at ``t0 + 90/50`` which rounds one ulp *below* ``(t0 + 0.3) + 1.5``; a rule that
    compares float times counted it as measured. The index rule counts exactly rate × duration."""
    t0 = 31.275
    measure_start, measure_end = t0 + 0.3, t0 + 0.3 + 1.5
    by_time = [n for n in range(200) if measure_start <= t0 + n / 50 < measure_end]
    assert len(by_time) == 76  # the old rule, reproduced
    spec = _config(rates=(50.0,), duration_s=1.5, warmup_s=0.3).sweep()[0]
    first, end = spec.constant_schedule()
    assert (first, end) == (15, 90)


@pytest.mark.parametrize("rate, warmup, duration, clients, expected", [
    (50.0, 0.3, 1.5, 1, 75), (100.0, 0.3, 1.5, 1, 150), (3.0, 0.0, 1.5, 1, 5), (160.0, 0.3, 3.0, 2, 240),
    (160.0, 0.3, 3.0, 3, 160), (0.5, 5.0, 10.0, 1, 5), (7.0, 0.7, 2.1, 1, 15),
])
def test_constant_schedule_counts(rate: float, warmup: float, duration: float, clients: int,
                                  expected: int) -> None:
    spec = _config(rates=(rate,), duration_s=duration, warmup_s=warmup, clients=clients).sweep()[0]
    first, end = spec.constant_schedule()
    assert end is not None and end - first == expected
    assert first / spec.client_rate >= warmup - 1e-9 > (first - 1) / spec.client_rate  # type: ignore[operator]
    counted = _config(rates=(rate,), requests=40 * clients, duration_s=None, warmup_s=warmup,
                      clients=clients).sweep()[0].constant_schedule()
    assert counted[1] is not None and counted[1] - counted[0] == 40


def test_search_verdicts_only_a_confident_pass_counts_and_the_resolution_stops_it() -> None:
    spec = SearchSpec(slo_p99_ms=100, start_rate=10, refine_steps=10, resolution=0.05)
    # an unsure probe brackets like a fail: the search never climbs on what it could not show
    assert spec.next_rate([(10, "pass"), (20, "unsure")]) == 15
    assert spec.next_rate([(10, "pass"), (20, "untrusted")]) == 15
    # bisection stops once the bracket is within 5 % of its lower end (17.5 to 18.75 is 7 %; to 18.125, 3.6 %)
    assert spec.next_rate([(10, "pass"), (20, "fail"), (15, "pass"), (17.5, "pass"), (18.75, "fail")]) == 18.125
    assert SearchSpec(slo_p99_ms=100, start_rate=10, resolution=0.1).next_rate(
        [(10, "pass"), (20, "fail"), (15, "pass"), (17.5, "pass"), (18.75, "fail")]) is None
    assert spec.next_rate([(10, "pass"), (20, "fail"), (15, "pass"), (17.5, "pass"), (18.75, "fail"),
                           (18.125, "fail")]) is None


@pytest.mark.parametrize("kw, match", [
    ({"repeats": 0}, "--repeats: 0 must be a whole number in 1..100"),
    ({"repeats": 2, "rates": (), "schedule": (Segment(5.0, 5.0, 10.0),), "warmup_s": 0.0, "duration_s": 10.0},
     "--repeats: a schedule is one step of its own"),
    ({"budget_s": -1.0}, "--budget: -1 must be in"),
    ({"drain_s": 1000.0}, "--drain: 1000 must be in"),
    ({"slo_percentile": "p42"}, "--slo-percentile: 'p42' is not one of"),
    ({"rates": (), "search": SearchSpec(slo_p99_ms=50), "capacity_fractions": (0.5, 0.9)},
     "with --search: give one fraction"),
])
def test_invalid_repeat_and_search_options(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _config(**kw)


def test_search_spec_validation() -> None:
    with pytest.raises(ConfigError, match="--search-resolution: 0 must be in"):
        SearchSpec(slo_p99_ms=50, resolution=0.0)
    with pytest.raises(ConfigError, match="--slo-percentile: 'p98'"):
        SearchSpec(slo_p99_ms=50, percentile="p98")
    ok = _config(rates=(), search=SearchSpec(slo_p99_ms=50), capacity_fractions=(0.5,), repeats=3)
    assert ok.repeats == 3 and ok.sweep() == []


def _probe_summary(rate: float, repeats: list[tuple[int, bool, float]]) -> dict[str, Any]:
    """A combined step as :func:`eks_inference.measure.repeats.summarize_repeats` writes one: ``repeats`` are
    (repeat, contended, p99 ms); contended repeats are left out while any other is clean."""
    clean = [r for r in repeats if not r[1]]
    used = clean or repeats
    p99 = max(r[2] for r in used)
    return {"mode": "open", "requested_rate": rate, "schedule": None, "ok": 100, "errors": 0, "error_rate": 0.0,
            "error_rate_lo": 0.0, "error_rate_hi": 0.01, "behind_schedule": False, "status": "complete",
            "latency_ms": {"p99": p99, "p99_lo": p99 * 0.9, "p99_hi": p99 * 1.1}, "unstable": False,
            "contended": not clean, "throughput_rps": rate, "repeats": len(used),
            "repeats_excluded": [{"repeat": r[0], "why": "measured while the host was contended"}
                                 for r in repeats if r[1] and clean],
            "repeat_values": [{"repeat": r[0], "contended": r[1]} for r in repeats]}


def test_a_probe_the_host_crowded_is_measured_again_after_a_pause_and_the_search_goes_on() -> None:
    """Rate 50 is measured twice under a neighbour, then (after a pause of one step) twice on a quiet host, to
    rest on as many clean repeats as were asked for, and passes; the search goes on to 100 instead of stopping or
    treating 50 as its boundary. The server meets the SLO up to 75 req/s."""
    import asyncio

    from eks_inference.loadgen import runner

    config = _config(rates=(), search=SearchSpec(slo_p99_ms=100, start_rate=50, max_rate=400, refine_steps=1),
                     repeats=2, duration_s=5.0, warmup_s=1.0)
    assert config.search is not None
    measured: dict[int, list[tuple[int, bool, float]]] = {}
    rates: dict[int, float] = {}
    pauses: list[float] = []
    crowded_until = 2  # the first two measurements of the run are taken under the neighbour

    async def measure(spec: Any) -> Any:
        n = sum(len(v) for v in measured.values())
        rates[spec.index] = spec.rate
        p99 = 50.0 if spec.rate <= 75 else 300.0
        measured.setdefault(spec.index, []).append((spec.repeat, n < crowded_until, p99 * (4 if n < 2 else 1)))

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    notes: list[str] = []
    asyncio.run(runner._search(config, config.search, measure,
                               lambda i: _probe_summary(rates[i], measured[i]), lambda s: True, 6.0, notes,
                               pause=pause))
    assert [len(measured[0]), rates[0]] == [4, 50]
    assert pauses == [6.0]
    assert any("pausing 6 s for the host to quieten" in n for n in notes), notes
    assert rates[1] == 100 and not any(n.startswith("search stopped at") for n in notes), notes
    assert notes[-1] == "search: capacity at p99 <= 100 ms: 75 req/s (95 % interval 75 to 100)"


def test_a_probe_crowded_every_time_ends_the_search_saying_so() -> None:
    import asyncio

    from eks_inference.loadgen import runner

    config = _config(rates=(), search=SearchSpec(slo_p99_ms=100, start_rate=50, max_rate=400), repeats=2,
                     duration_s=5.0, warmup_s=1.0)
    assert config.search is not None
    measured: list[tuple[int, bool, float]] = []
    pauses: list[float] = []

    async def measure(spec: Any) -> Any:
        measured.append((spec.repeat, True, 500.0))

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    notes: list[str] = []
    asyncio.run(runner._search(config, config.search, measure, lambda i: _probe_summary(50, measured),
                               lambda s: True, 6.0, notes, pause=pause))
    # two repeats, then repeats + CONTENDED_RETRIES more, each after a pause
    assert len(measured) == 2 + 2 + runner.CONTENDED_RETRIES
    assert len(pauses) == 2 + runner.CONTENDED_RETRIES
    assert any(n.startswith("search stopped at") and "contended" in n for n in notes), notes

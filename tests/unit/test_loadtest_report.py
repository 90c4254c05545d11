"""Prices, SLO verdicts, ranking, format versions and the report writers, on synthetic results."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import pytest

from eks_inference.analysis.aggregate import build_targets
from eks_inference.analysis.report import CSV_COLUMNS, build_document, build_figure, write_report
from eks_inference.config import ConfigError
from eks_inference.measure.results import FORMAT, FORMAT_VERSION, check_versions, load_results
from eks_inference.measure.spec import Arrival, Mode, StepSpec, TargetInfo
from eks_inference.measure.stats import StepRecorder
from eks_inference.measure.steps import ClientStep, slo_verdict, summarize
from eks_inference.storage import Found
from eks_inference.tables.prices import DEFAULT_PRICES, load_prices, usd_per_million

T0 = 1_800_000_000.0
REQUIRED_TYPES = ("m7g.large", "m7g.xlarge", "c7g.xlarge", "c7g.2xlarge", "c7g.4xlarge", "inf2.xlarge",
                  "inf2.8xlarge", "inf2.24xlarge", "g5.xlarge", "g5.2xlarge", "g6.xlarge", "g6.2xlarge",
                  "c7i.xlarge", "c7i.2xlarge")


def test_price_table_covers_the_default_config_in_three_regions() -> None:
    for region in ("us-east-1", "us-west-2", "eu-west-1"):
        for t in REQUIRED_TYPES:
            price = DEFAULT_PRICES.hourly(t, region)
            assert price is not None and 0.01 < price < 20, (region, t)
    assert DEFAULT_PRICES.date and "snapshot" in DEFAULT_PRICES.note
    # Bigger sizes of a family cost more, a sanity check on transcription.
    for fam in ("c7g", "inf2", "g5", "g6", "c7i", "m7g"):
        sizes = [DEFAULT_PRICES.hourly(t, "us-east-1") or 0 for t in REQUIRED_TYPES if t.startswith(fam + ".")]
        assert sizes == sorted(sizes)
    assert DEFAULT_PRICES.hourly("laptop", "us-east-1") is None
    assert DEFAULT_PRICES.hourly(None, "us-east-1") is None


def test_the_system_and_cpu_group_types_are_priced_where_transcribed() -> None:
    """m7i (system node groups) and c7i.4xlarge (prod's cpu group), added 2026-11-29 for plan and docs/costs.md."""
    for region in ("us-east-1", "us-west-2"):
        assert (DEFAULT_PRICES.hourly("m7i.large", region), DEFAULT_PRICES.hourly("m7i.xlarge", region),
                DEFAULT_PRICES.hourly("c7i.4xlarge", region)) == (0.1008, 0.2016, 0.714)
    assert DEFAULT_PRICES.hourly("c7i.4xlarge", "eu-west-1") == pytest.approx(
        4 * (DEFAULT_PRICES.hourly("c7i.xlarge", "eu-west-1") or 0))
    assert DEFAULT_PRICES.hourly("m7i.large", "eu-west-1") is None  # not transcribed there: n/a, never guessed
    assert "added on 2026-11-29" in DEFAULT_PRICES.note


def test_price_overrides(tmp_path: Path) -> None:
    f = tmp_path / "prices.json"
    f.write_text(json.dumps({"date": "2030-01-01", "prices": {"us-east-1": {"c7g.xlarge": 0.1},
                                                              "*": {"laptop": 0.05}}}))
    t = load_prices(f)
    assert t.date == "2030-01-01"
    assert t.hourly("c7g.xlarge", "us-east-1") == 0.1
    assert t.hourly("laptop", "eu-west-1") == 0.05
    assert t.hourly("c7g.2xlarge", "us-east-1") == DEFAULT_PRICES.hourly("c7g.2xlarge", "us-east-1")
    f.write_text(json.dumps({"prices": {"us-east-1": {"c7g.xlarge": "cheap"}}}))
    with pytest.raises(ConfigError, match=r"prices\['us-east-1'\]\['c7g.xlarge'\] = 'cheap'"):
        load_prices(f)
    f.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_prices(f)


def test_cost_per_million_inferences() -> None:
    # $3.60/hour at 1000 inferences/s: 3.6M inferences per hour for $3.60, so $1 per million.
    assert usd_per_million(3.6, 1000.0) == pytest.approx(1.0)
    assert usd_per_million(None, 1000.0) is None
    assert usd_per_million(1.0, 0.0) is None


def _step(name: str, *, rate: float, p99_s: float, instance: str | None, nodes: int = 1, errors: int = 0,
          run_id: str = "r", index: int = 0, inputs: int = 1, behind: bool = False) -> ClientStep:
    rec = StepRecorder(window_start=T0)
    n = int(rate * 10)
    for k in range(n):
        lat = p99_s if k % 50 == 0 else p99_s / 10  # 2% at the tail value, so p99 is it
        rec.record_ok(lat, T0 + k / rate, inputs)
    for _ in range(errors):
        rec.record_error("http_503", T0 + 5)
    spec = StepSpec(index=index, mode=Mode.OPEN, arrival=Arrival.CONSTANT, rate=rate, concurrency=None,
                    client_rate=rate, client_concurrency=None, duration_s=10.0, requests=None, warmup_s=0)
    return ClientStep(source=f"{name}-{run_id}-{index}.json", run_id=run_id, client_index=0, clients=1,
                      target=TargetInfo(name=name, url="http://h/" + name, processor="cpu", instance_type=instance,
                                        nodes=nodes, region="us-east-1"),
                      spec=spec, stats=rec.finish(window_s=10.0), client={"behind_schedule": behind})


PASSED = {"status": "passed", "summary": "PASSED: 31 of 31 probes agree"}


def verified(steps: list[ClientStep]) -> dict[tuple[str, str | None], Any]:
    """Every series of ``steps`` verified: only verified series are ranked."""
    return {(st.target.name, st.run_id): PASSED for st in steps}


def test_slo_verdicts_say_why() -> None:
    ok = summarize([_step("a", rate=100, p99_s=0.05, instance=None)])
    assert slo_verdict(ok, slo_p99_ms=100, max_error_rate=0.01)[0]
    slow = summarize([_step("a", rate=100, p99_s=0.5, instance=None)])
    assert slo_verdict(slow, slo_p99_ms=100, max_error_rate=0.01) == (False, "p99 500.0 ms > SLO 100 ms")
    failing = summarize([_step("a", rate=100, p99_s=0.05, instance=None, errors=50)])
    assert "error rate" in slo_verdict(failing, slo_p99_ms=100, max_error_rate=0.01)[1]
    behind = summarize([_step("a", rate=100, p99_s=0.05, instance=None, behind=True)])
    assert "behind its schedule" in slo_verdict(behind, slo_p99_ms=100, max_error_rate=0.01)[1]


def _fleet() -> list[ClientStep]:
    return [
        # graviton: 400 inf/s within SLO on 2 × c7g.xlarge, then breaks it
        _step("graviton", rate=200, p99_s=0.03, instance="c7g.xlarge", nodes=2, index=0),
        _step("graviton", rate=400, p99_s=0.08, instance="c7g.xlarge", nodes=2, index=1),
        _step("graviton", rate=800, p99_s=0.9, instance="c7g.xlarge", nodes=2, index=2),
        # inferentia: 2 inputs per request, 1600 inf/s within SLO on one inf2.xlarge
        _step("inferentia", rate=400, p99_s=0.02, instance="inf2.xlarge", inputs=2, index=0),
        _step("inferentia", rate=800, p99_s=0.04, instance="inf2.xlarge", inputs=2, index=1),
        # laptop: unknown price, still reported
        _step("laptop", rate=50, p99_s=0.06, instance=None),
        # gpu: never meets the SLO
        _step("gpu", rate=100, p99_s=0.3, instance="g5.xlarge"),
    ]


def test_ranking_by_cost_per_million_at_the_best_slo_rate() -> None:
    targets, warnings = build_targets(_fleet(), slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                                      verifications=verified(_fleet()))
    names = [t.target.name for t in targets]
    g = next(t for t in targets if t.target.name == "graviton")
    i = next(t for t in targets if t.target.name == "inferentia")
    assert g.best is not None and g.best.summary["requested_rate"] == 400
    assert i.best is not None and i.best.summary["inferences_per_s"] == pytest.approx(1600)
    g_cost = 2 * 0.145 / (400 * 3600) * 1e6
    i_cost = 0.7582 / (1600 * 3600) * 1e6
    assert g.usd_per_million_inferences == pytest.approx(g_cost)
    assert i.usd_per_million_inferences == pytest.approx(i_cost)
    cheaper_first = ["graviton", "inferentia"] if g_cost < i_cost else ["inferentia", "graviton"]
    assert names == [*cheaper_first, "laptop", "gpu"]
    assert [t.rank for t in targets] == [1, 2, None, None]
    assert any("laptop" in w and "n/a" in w for w in warnings)
    assert any("gpu" in w and "no step met the SLO" in w for w in warnings)


def test_report_files(tmp_path: Path) -> None:
    targets, warnings = build_targets(_fleet(), slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                                      verifications=verified(_fleet()))
    doc = build_document(targets, warnings=warnings, slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                         inputs=[{"source": "x.json", "target": "graviton"}], generated_at=T0)
    paths = write_report(tmp_path, doc, targets, slo_p99_ms=100, title="test")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = paths["html"].read_text()
    assert "data:image/png;base64," in html and 'src="http' not in html and "<link" not in html
    assert "graviton" in html and DEFAULT_PRICES.date in html
    with paths["csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(_fleet())
    assert json.loads(paths["json"].read_text())["ranking"][0]["rank"] == 1


def _doc(version: Any) -> dict[str, Any]:
    st = _step("a", rate=10, p99_s=0.01, instance=None)
    return {"format": FORMAT, "format_version": version, "run_id": "r", "target": st.target.to_dict(),
            "client": {"index": 0, "count": 1},
            "steps": [{"spec": st.spec.to_dict(), "stats": st.stats.to_dict(), "client": {}}]}


def test_mixed_format_versions_are_a_clear_error() -> None:
    docs = [("a.json", _doc(FORMAT_VERSION)), ("b.json", _doc(FORMAT_VERSION + 1)), ("c.json", _doc(FORMAT_VERSION))]
    with pytest.raises(ConfigError, match=r"different format versions.*version 1: a.json, c.json; version 2: b.json"):
        check_versions(docs)
    with pytest.raises(ConfigError, match=r"b\.json: result format version 2"):
        check_versions(docs[1:2])


def test_inputs_that_are_not_results() -> None:
    good = Found(source="a.json", text=json.dumps(_doc(FORMAT_VERSION)), explicit=True)
    other = Found(source="dir/report.json", text=json.dumps({"format": "something else"}), explicit=False)
    parsed, skipped = load_results([good, other])
    assert len(parsed) == 1 and skipped == ["dir/report.json: skipped (not a load-test result)"]
    with pytest.raises(ConfigError, match=r"x\.json: not an eks-inference load-test result"):
        load_results([good, Found(source="x.json", text="{}", explicit=True)])
    broken = copy.deepcopy(_doc(FORMAT_VERSION))
    del broken["steps"][0]["stats"]
    with pytest.raises(ConfigError, match=r"y\.json: malformed result file"):
        load_results([Found(source="y.json", text=json.dumps(broken), explicit=True)])


def test_the_same_client_twice_and_conflicting_clients_are_errors() -> None:
    a = _step("a", rate=10, p99_s=0.01, instance="c7g.xlarge")
    with pytest.raises(ConfigError, match="appears twice"):
        build_targets([a, a], slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES)
    b = _step("a", rate=20, p99_s=0.01, instance="c7g.2xlarge", index=1)
    with pytest.raises(ConfigError, match="the clients of one run must describe the same target"):
        build_targets([a, b], slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES)


def test_two_runs_of_one_target_are_two_series_everywhere(tmp_path: Path) -> None:
    """Run r1 passes up to 200/s; run r2 (another day, another instance type) up to 300/s. Merged, they would be one
    zig-zag line and one "best" picked across both; apart, each run has its own curve, best step, cost and rank."""
    r1 = [_step("a", rate=r, p99_s=p, instance="c7g.xlarge", run_id="r1", index=i)
          for i, (r, p) in enumerate([(100, 0.02), (400, 0.5), (200, 0.05)])]
    r2 = [_step("a", rate=r, p99_s=p, instance="c7g.2xlarge", run_id="r2", index=i)
          for i, (r, p) in enumerate([(150, 0.02), (300, 0.06), (600, 0.9)])]
    targets, _ = build_targets(r1 + r2, slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                               verifications=verified(r1 + r2))
    by_run = {t.run_id: t for t in targets}
    assert set(by_run) == {"r1", "r2"} and {t.label for t in targets} == {"a · run r1", "a · run r2"}
    assert by_run["r1"].best is not None and by_run["r1"].best.summary["requested_rate"] == 200
    assert by_run["r2"].best is not None and by_run["r2"].best.summary["requested_rate"] == 300
    assert [p.summary["run_id"] for p in by_run["r1"].points] == ["r1"] * 3
    assert by_run["r1"].usd_per_million_inferences == pytest.approx(0.145 / (200 * 3600) * 1e6)
    assert by_run["r2"].usd_per_million_inferences == pytest.approx(0.29 / (300 * 3600) * 1e6)
    assert (by_run["r1"].rank, by_run["r2"].rank) == (1, 2)  # $0.145/h at 200/s beats $0.29/h at 300/s

    doc = build_document(targets, warnings=[], slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                         inputs=[], generated_at=T0)
    assert [(r["run_id"], r["rank"]) for r in doc["ranking"]] == [("r1", 1), ("r2", 2)]
    assert {t["run_id"] for t in doc["targets"]} == {"r1", "r2"}
    paths = write_report(tmp_path, doc, targets, slo_p99_ms=100, title="t")
    with paths["csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert {(r["series"], r["run_id"]) for r in rows} == {("a · run r1", "r1"), ("a · run r2", "r2")}
    fig = build_figure(targets, slo_p99_ms=100, title="t")
    ax = fig.axes[0]
    p99_lines = {ln.get_label(): list(ln.get_xdata()) for ln in ax.get_lines() if str(ln.get_label()).endswith("p99")}
    assert set(p99_lines) == {"a · run r1 p99", "a · run r2 p99"}
    for xs in p99_lines.values():  # each run's own steps, in order of offered load: no line jumps between runs
        assert len(xs) == 3
    html = paths["html"].read_text()
    assert "a · run r1" in html and "a · run r2" in html


def test_a_target_that_measured_nothing_stays_in_the_report() -> None:
    down = TargetInfo(name="down", url="http://h/down", instance_type="inf2.xlarge")
    targets, warnings = build_targets(_fleet()[:1], slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                                      targets_without_steps=[(down, "r9", "down.json")])
    assert [t.target.name for t in targets] == ["graviton", "down"]
    assert targets[1].best is None and targets[1].points == () and targets[1].rank is None
    assert targets[1].unranked_reason == "nothing was measured"
    assert "down: nothing was measured (see the run errors); it is not ranked" in warnings


def test_a_local_run_priced_as_an_instance_type_says_so(tmp_path: Path) -> None:
    local = _step("laptop", rate=50, p99_s=0.06, instance=None)
    priced = ClientStep(**{**local.__dict__, "target": TargetInfo(name="laptop", url="http://h/laptop",
                                                                  processor="cpu", price_as="c7i.large")})
    targets, warnings = build_targets([priced], slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                                      verifications=verified([priced]))
    (t,) = targets
    assert t.rank == 1 and t.price_per_instance_hour == DEFAULT_PRICES.hourly("c7i.large", "us-east-1")
    assert t.usd_per_million_inferences == pytest.approx(0.08925 / (50 * 3600) * 1e6)
    doc = build_document(targets, warnings=warnings, slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                         inputs=[], generated_at=T0)
    assert doc["targets"][0]["price_basis"].startswith("priced as c7i.large")
    assert doc["ranking"][0]["priced_as"] is True
    html = write_report(tmp_path, doc, targets, slo_p99_ms=100, title="t")["html"].read_text()
    assert "priced as c7i.large × 1" in html
    fig = build_figure(targets, slo_p99_ms=100, title="t")
    assert any("priced as c7i.large" in lbl.get_text() for lbl in fig.axes[1].get_yticklabels())


def test_missing_prices_give_the_fix_that_works() -> None:
    nothing = _step("laptop", rate=50, p99_s=0.06, instance=None)
    unknown = _step("box", rate=50, p99_s=0.06, instance="x9.huge")
    _, warnings = build_targets([nothing, unknown], slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                                verifications=verified([nothing, unknown]))
    (w_laptop,) = [w for w in warnings if w.startswith("laptop")]
    assert "--instance-type TYPE" in w_laptop and "--price-as TYPE" in w_laptop and "--prices" not in w_laptop
    (w_box,) = [w for w in warnings if w.startswith("box")]
    assert "no price for x9.huge in us-east-1" in w_box and "--prices FILE" in w_box
    assert '"x9.huge": USD_PER_HOUR' in w_box


def test_price_table_age_warning() -> None:
    import datetime as dt

    from eks_inference.tables.prices import MAX_PRICE_AGE_DAYS, PriceTable, age_warning

    taken = dt.date.fromisoformat(DEFAULT_PRICES.date)
    assert age_warning(DEFAULT_PRICES, today=taken + dt.timedelta(days=MAX_PRICE_AGE_DAYS)) is None
    w = age_warning(DEFAULT_PRICES, today=taken + dt.timedelta(days=400))
    assert w is not None and f"dated {DEFAULT_PRICES.date}, 400 days old (more than {MAX_PRICE_AGE_DAYS})" in w
    assert "--prices FILE" in w
    assert "not an ISO date" in (age_warning(PriceTable(date="June", source="x"), today=taken) or "")


def test_percentiles_from_too_few_samples_are_marked(tmp_path: Path) -> None:
    from eks_inference.measure.stats import MIN_SAMPLES, few_samples

    assert MIN_SAMPLES == {"p50": 20, "p90": 100, "p95": 200, "p99": 1000, "p999": 10000}
    assert few_samples(25) == ["p90", "p95", "p99", "p999"] and few_samples(1000) == ["p999"]
    assert few_samples(0) == [] and few_samples(10_000) == []
    rec = StepRecorder(window_start=T0)
    for k in range(25):
        rec.record_ok(0.01 + k / 1000, T0 + k / 10)
    spec = StepSpec(index=0, mode=Mode.OPEN, arrival=Arrival.CONSTANT, rate=10, concurrency=None, client_rate=10,
                    client_concurrency=None, duration_s=2.5, requests=None, warmup_s=0)
    st = ClientStep(source="s.json", run_id="r", client_index=0, clients=1,
                    target=TargetInfo(name="t", url="http://h/t", instance_type="c7g.xlarge"), spec=spec,
                    stats=rec.finish(window_s=2.5))
    targets, _ = build_targets([st], slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES)
    doc = build_document(targets, warnings=[], slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                         inputs=[], generated_at=T0)
    assert doc["targets"][0]["steps"][0]["few_samples"] == ["p90", "p95", "p99", "p999"]
    assert doc["percentile_min_samples"]["p99"] == 1000
    paths = write_report(tmp_path, doc, targets, slo_p99_ms=100, title="t")
    with paths["csv"].open() as f:
        assert next(csv.DictReader(f))["few_samples"] == "p90;p95;p99;p999"
    html = paths["html"].read_text()
    assert 'class="few" title="from 25 successful requests; p99 needs at least 1,000"' in html
    assert "p99 ≥ 1,000" in html
    legend = [t.get_text() for t in build_figure(targets, slo_p99_ms=100, title="t").axes[0].get_legend().get_texts()]
    assert "p99 from < 1,000 requests (rough)" in legend


def test_slo_above_every_point_stays_visible_and_clear_of_the_legend() -> None:
    targets, _ = build_targets(_fleet(), slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES)
    slo = 50_000.0  # far above every point (the slowest p99 is 900 ms)
    fig = build_figure(targets, slo_p99_ms=slo, title="t")
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert lo < slo < hi and hi / slo >= 1.5  # inside, with room above
    y_px = ax.transData.transform((1.0, slo))[1]
    axes_box = ax.get_window_extent()
    legend_box = ax.get_legend().get_window_extent()
    assert axes_box.y0 < y_px < axes_box.y1
    assert legend_box.y1 <= axes_box.y0 + 1  # the legend lies below the plot: it can hide no line
    assert any(t.get_text().startswith(f"SLO {slo:g} ms") for t in ax.texts)


def test_cost_chart_shows_every_series_with_a_reason_when_unranked() -> None:
    targets, _ = build_targets(_fleet(), slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                               verifications=verified(_fleet()))
    bx = build_figure(targets, slo_p99_ms=100, title="t").axes[1]
    ticks = sorted((lbl.get_position()[1], lbl.get_text().split("\n")[0]) for lbl in bx.get_yticklabels())
    assert [text for _, text in ticks][::-1] == [t.label for t in targets]  # top to bottom, in rank order
    texts = [t.get_text() for t in bx.texts]
    assert "no step met the SLO" in texts  # gpu
    assert "no instance type to price" in texts  # laptop
    assert sum(t.startswith("$") for t in texts) == 2  # graviton and inferentia


def test_provenance_is_readable_not_a_cut_json_dump(tmp_path: Path) -> None:
    info = {"model": "minilm", "processor": "cpu", "dtype": "fp32", "max_batch_size": 32,
            "versions": {"ray": "2.60.0", "torch": "2.13.0"}, "artifact": {"key": "k" * 400, "checks": list(range(50))}}
    targets, warnings = build_targets(_fleet()[:1], slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES)
    inputs = [{"source": "results/r_graviton_client0.json", "run_id": "r", "target": "graviton",
               "client": {"index": 0, "count": 1}, "status": "complete", "started_at": "2026-01-01T00:00:00Z",
               "ended_at": "2026-01-01T00:01:00Z", "provenance": {"tool_version": "0.1.0", "git_sha": "a" * 40,
                                                                   "host": "h", "argv": ["eks-inference", "loadtest"]},
               "server_info": info, "server_info_error": None}]
    doc = build_document(targets, warnings=warnings, slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                         inputs=inputs, generated_at=T0)
    html = write_report(tmp_path, doc, targets, slo_p99_ms=100, title="t")["html"].read_text()
    assert "model minilm · processor cpu · dtype fp32 · max batch size 32 · ray 2.60.0 · torch 2.13.0" in html
    assert "k" * 400 in html  # the raw document is whole, inside a collapsed, wrapping block
    assert "<details><summary>server /info (raw)</summary><pre>" in html

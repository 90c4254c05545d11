"""Prices, SLO verdicts, ranking, format versions and the report writers, on synthetic results."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import pytest

from eks_inference.config import ConfigError
from eks_inference.loadtest.aggregate import ClientStep, build_targets, slo_verdict, summarize
from eks_inference.loadtest.plan import Arrival, Mode, StepSpec, TargetInfo
from eks_inference.loadtest.prices import DEFAULT_PRICES, load_prices, usd_per_million
from eks_inference.loadtest.report import CSV_COLUMNS, build_document, write_report
from eks_inference.loadtest.results import FORMAT, FORMAT_VERSION, check_versions, load_results
from eks_inference.loadtest.stats import StepRecorder
from eks_inference.loadtest.storage import Found

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
    targets, warnings = build_targets(_fleet(), slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES)
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
    targets, warnings = build_targets(_fleet(), slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES)
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


def test_the_same_client_twice_and_conflicting_targets_are_errors() -> None:
    a = _step("a", rate=10, p99_s=0.01, instance="c7g.xlarge")
    with pytest.raises(ConfigError, match="appears twice"):
        build_targets([a, a], slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES)
    b = _step("a", rate=10, p99_s=0.01, instance="c7g.2xlarge", run_id="r2")
    with pytest.raises(ConfigError, match="own --target-name"):
        build_targets([a, b], slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES)


def test_a_target_that_measured_nothing_stays_in_the_report() -> None:
    down = TargetInfo(name="down", url="http://h/down", instance_type="inf2.xlarge")
    targets, warnings = build_targets(_fleet()[:1], slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                                      targets_without_steps=[(down, "down.json")])
    assert [t.target.name for t in targets] == ["graviton", "down"]
    assert targets[1].best is None and targets[1].points == () and targets[1].rank is None
    assert "down: nothing was measured (see the run errors); it is not ranked" in warnings

"""The committed example report (docs/example-report/, written by `make demo`) still matches what the report
code writes today, and shows what the demo is for: a verified target, a cost priced as a named instance type,
and a knee."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from eks_inference.analysis.report import CSV_COLUMNS, PERCENTILE_RULE
from eks_inference.measure.results import REPORT_FORMAT, REPORT_FORMAT_VERSION

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "example-report"


def test_the_example_has_the_current_format() -> None:
    doc = json.loads((EXAMPLE / "report.json").read_text())
    assert (doc["format"], doc["format_version"]) == (REPORT_FORMAT, REPORT_FORMAT_VERSION)
    assert doc["percentile_rule"] == PERCENTILE_RULE
    with (EXAMPLE / "report.csv").open() as f:
        assert tuple(next(csv.reader(f))) == CSV_COLUMNS  # regenerate with `make demo` when this changes
    assert (EXAMPLE / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_example_shows_a_cost_priced_as_and_a_knee() -> None:
    doc = json.loads((EXAMPLE / "report.json").read_text())
    (target,) = doc["targets"]
    assert target["rank"] == 1 and target["usd_per_million_inferences"] > 0
    assert target["target"]["price_as"] and target["price_basis"].startswith("priced as ")
    steps = sorted(target["steps"], key=lambda s: s["requested_rate"])
    verdicts = [s["slo_met"] for s in steps]
    assert verdicts[0] and not verdicts[-1] and verdicts == sorted(verdicts, reverse=True)  # passes, then the knee
    p99 = [s["latency_ms"]["p99"] for s in steps]
    assert p99[-1] > 5 * p99[0]
    html = (EXAMPLE / "report.html").read_text()
    assert f"priced as {target['target']['price_as']}" in html


def test_the_example_target_was_verified_before_it_was_ranked() -> None:
    doc = json.loads((EXAMPLE / "report.json").read_text())
    (target,) = doc["targets"]
    assert target["verified"] == "yes" and target["verification"]["status"] == "passed"
    assert target["verification"]["summary"].startswith("PASSED: ")
    assert doc["ranking"][0]["verified"] == "yes"
    assert '<td class="l ok">yes</td>' in (EXAMPLE / "report.html").read_text()

"""The report never ranks a target whose answers were not verified or failed verification; it still shows it,
with the reason, in every format."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.console import Console

from eks_inference.analysis.aggregate import build_targets, series_verification
from eks_inference.analysis.report import build_document, build_figure, ranking_table, write_report
from eks_inference.tables.prices import DEFAULT_PRICES

from .test_loadtest_report import PASSED, T0, _step

FAILED = {"status": "failed", "summary": "FAILED: 20 of 31 probes agree",
          "worst": {"probe": "ladder-90", "text": "ladder-90 ('Ray Serve batches…'): cosine 0.6902 < 0.99"}}
NOT_CHECKED = {"status": "not-checked", "reason": "verification could not run: no stored reference"}


def _targets() -> tuple[list, list[str]]:
    steps = [
        _step("slow-right", rate=100, p99_s=0.05, instance="c7g.xlarge"),          # verified
        _step("fast-wrong", rate=1000, p99_s=0.02, instance="c7g.xlarge"),         # the cheapest, but wrong
        _step("unchecked", rate=500, p99_s=0.03, instance="c7g.xlarge"),           # run without --verify
        _step("not-checkable", rate=400, p99_s=0.03, instance="c7g.xlarge"),       # --verify could not run
        _step("right-unpriced", rate=50, p99_s=0.05, instance=None),              # verified, no price
    ]
    return build_targets(steps, slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES, verifications={
        ("slow-right", "r"): PASSED, ("fast-wrong", "r"): FAILED, ("not-checkable", "r"): NOT_CHECKED,
        ("right-unpriced", "r"): PASSED})


def test_only_verified_targets_are_ranked() -> None:
    targets, warnings = _targets()
    by = {t.target.name: t for t in targets}
    assert [t.target.name for t in targets] == ["slow-right", "right-unpriced", "unchecked", "not-checkable",
                                                "fast-wrong"]
    assert [t.rank for t in targets] == [1, None, None, None, None]
    assert by["fast-wrong"].usd_per_million_inferences < by["slow-right"].usd_per_million_inferences  # type: ignore
    assert by["fast-wrong"].verified == "FAILED: ladder-90 ('Ray Serve batches…'): cosine 0.6902 < 0.99"
    assert by["fast-wrong"].unranked_reason == "its answers FAILED verification"
    assert by["unchecked"].verified == by["not-checkable"].verified == "not checked"
    assert by["unchecked"].unranked_reason == "not verified (measure with loadtest run --verify)"
    assert by["slow-right"].verified == "yes" and by["right-unpriced"].unranked_reason == "no instance type to price"
    assert any(w.startswith("fast-wrong: its answers FAILED verification (FAILED: ladder-90") for w in warnings)
    assert "unchecked: its answers were not verified; it is not ranked (measure with `loadtest run --verify`)" in (
        warnings)
    assert any(w.startswith("not-checkable: its answers were not verified (verification could not run: no stored "
                            "reference)") for w in warnings)


def test_the_verified_column_and_reason_in_every_format(tmp_path: Path) -> None:
    targets, warnings = _targets()
    doc = build_document(targets, warnings=warnings, slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                         inputs=[], generated_at=T0)
    assert [(r["target"], r["rank"], r["verified"]) for r in doc["ranking"]][:1] == [("slow-right", 1, "yes")]
    wrong = next(t for t in doc["targets"] if t["target"]["name"] == "fast-wrong")
    assert wrong["verification"]["status"] == "failed" and wrong["rank"] is None
    paths = write_report(tmp_path, doc, targets, slo_p99_ms=100, title="t")
    with paths["csv"].open() as f:
        verified = {row["series"]: row["verified"] for row in csv.DictReader(f)}
    assert verified["slow-right"] == "yes" and verified["unchecked"] == "not checked"
    assert verified["fast-wrong"].startswith("FAILED: ladder-90")
    html = paths["html"].read_text()
    assert '<td class="l bad">FAILED: ladder-90' in html and '<td class="l ok">yes</td>' in html
    assert "its answers FAILED verification" in html
    assert json.loads(paths["json"].read_text())["ranking"][0]["verified"] == "yes"

    console = Console(width=250, record=True)
    console.print(ranking_table(targets, slo_p99_ms=100, prices=DEFAULT_PRICES))
    text = console.export_text()
    assert "verified" in text and "FAILED: ladder-90" in text


def test_the_cost_chart_gives_no_bar_to_an_unverified_or_failing_target() -> None:
    targets, _ = _targets()
    bx = build_figure(targets, slo_p99_ms=100, title="t").axes[1]
    texts = [t.get_text() for t in bx.texts]
    assert sum(t.startswith("$") for t in texts) == 1  # slow-right only, though fast-wrong is cheaper
    assert "its answers FAILED verification" in texts
    assert texts.count("not verified (measure with loadtest run --verify)") == 2


def test_a_runs_verdict_comes_from_its_clients() -> None:
    """Client 0 verifies; the others record its verdict or nothing. One failure fails the run."""
    assert series_verification([None, None]) is None
    assert series_verification([PASSED, None])["status"] == "passed"  # type: ignore[index]
    assert series_verification([{"status": "not-checked", "reason": "client 0 verifies"}, PASSED])[  # type: ignore
        "status"] == "passed"
    assert series_verification([PASSED, FAILED])["status"] == "failed"  # type: ignore[index]
    assert series_verification([NOT_CHECKED])["status"] == "not-checked"  # type: ignore[index]

"""A contended step is flagged in every format of the report: CSV, console table, HTML, plot and warnings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from eks_inference.analysis.aggregate import TargetReport, build_targets
from eks_inference.analysis.report import build_document, csv_rows, steps_table, write_report
from eks_inference.measure import contention
from eks_inference.tables.prices import DEFAULT_PRICES

from .test_loadtest_report import _step

QUIET = {"host_steal": 0.0, "client_wait": 0.03, "psi_some": 0.2, "client_cpu_of_core": 0.1}
BUSY = {**QUIET, "client_wait": 0.45, "psi_some": 1.0}


def _targets() -> tuple[list[TargetReport], list[str]]:
    quiet = _step("a", rate=50, p99_s=0.02, instance=None, index=0)
    busy = _step("a", rate=100, p99_s=0.03, instance=None, index=1)
    quiet = dataclasses.replace(quiet, client={**quiet.client, "host": QUIET})
    busy = dataclasses.replace(busy, client={**busy.client, "host": BUSY})
    return build_targets([quiet, busy], slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES)


def test_the_flag_and_its_reason_reach_every_format(tmp_path: Path) -> None:
    targets, warnings = _targets()
    (t,) = targets
    quiet, busy = t.points
    assert not quiet.summary["contended"] and busy.summary["contended"]
    reason = f"client 0: client waiting for a core 45% > {contention.CLIENT_WAIT_MAX:.0%}"
    assert busy.summary["contention"]["reasons"] == [reason]
    assert [w for w in warnings if "contended host" in w] == [
        f"a step 1: measured on a contended host ({reason}); its figures are not the server's alone and no "
        "capacity rests on it (measure again on a quieter machine)"]

    rows = csv_rows(targets)
    assert [(r["contended"], r["client_wait"]) for r in rows] == [(False, 0.03), (True, 0.45)]
    assert rows[1]["contention"] == reason and rows[0]["contention"] == "within limits"

    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(steps_table([dict(p.summary, slo_met=p.slo_met, slo_reason=p.slo_reason) for p in t.points]))
    text = console.export_text()
    assert "contended: " + reason in text

    doc = build_document(targets, warnings=warnings, slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                         inputs=[], generated_at=0.0)
    paths = write_report(tmp_path, doc, targets, slo_p99_ms=100, title="t")
    html = next(p for p in paths.values() if p.suffix == ".html").read_text()
    assert "contended: " + reason.replace(">", "&gt;") in html


def test_a_crowded_host_is_noted_not_flagged() -> None:
    psi = 0.9
    s = _step("a", rate=50, p99_s=0.02, instance=None)
    s = dataclasses.replace(s, client={**s.client, "host": {**QUIET, "psi_some": psi}})
    targets, warnings = build_targets([s], slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES)
    (p,) = targets[0].points
    assert not p.summary["contended"] and p.summary["contention"]["crowded"]
    assert not [w for w in warnings if "contended host" in w]
    assert csv_rows(targets)[0]["host_psi_some"] == psi

"""The report's "tuned vs as configured" section, from trials files written by tune's own search (through its fake
measurement seam, as in test_tune.py): per processor the configured shape against the tuned winner with intervals,
the ranking between tuned shapes, and every trial that could not win counted with why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eks_inference.analysis import report
from eks_inference.analysis.tuned import read_trials, tuned_html, tuned_lines, tuned_section
from eks_inference.config import ConfigError
from eks_inference.tables.prices import DEFAULT_PRICES
from eks_inference.tune.search import Rung, TrialsFile, successive_halving
from eks_inference.tune.space import Candidate
from tests.unit.test_tune import FakeClock, FakeMeasure

SCREEN = Rung("screen", expected_s=60.0)
CONFIRM = Rung("confirm", expected_s=120.0)


class Priced(FakeMeasure):
    """FakeMeasure's capacities, priced at ``usd_per_hour`` (USD per million = hourly / capacity / 3600 * 1e6)."""

    def __init__(self, clock: FakeClock, usd_per_hour: float, wrong: set[str] = frozenset()) -> None:
        super().__init__(clock, wrong=wrong)
        self.usd_per_hour = usd_per_hour

    def __call__(self, c: Candidate, rung: Rung) -> dict[str, Any]:
        out = super().__call__(c, rung)
        if out["status"] == "measured":
            out["usd_per_million"] = self.usd_per_hour / out["capacity"]["rps"] / 3600 * 1e6
        return out


def tune(path: Path, processor: str, *, configured: Candidate, others: list[Candidate], usd_per_hour: float,
         wrong: set[str] = frozenset()) -> Any:
    clock = FakeClock()
    return successive_halving([configured, *others], Priced(clock, usd_per_hour, wrong), rungs=(SCREEN, CONFIRM),
                              budget_s=3600, trials=TrialsFile(path), keep=[configured], clock=clock,
                              context={"processor": processor, "env": "tune", "model": "minilm", "slo_ms": 250.0,
                                       "percentile": "p99", "price": f"{processor} host"})


# FakeMeasure: rps = 10 x replicas + max_batch_size + 30 - wait_ms; intervals +-10 %
SLOW = Candidate(1, 2, 4, 20.0, "fp32")            # 24 req/s
FAST = Candidate(2, 1, 64, 0.0, "fp32")            # 114 req/s
MID = Candidate(1, 1, 32, 5.0, "fp32")             # 67 req/s
WRONG = Candidate(2, 1, 32, 0.0, "bf16")           # fails verify (and would be the fastest)


@pytest.fixture()
def trials(tmp_path: Path) -> list[Path]:
    # graviton configured slow, tuned fast, at $1/h; inferentia configured mid, nothing better, at $1.5/h:
    # as configured inferentia is cheaper (1.5/67 < 1/24); tuned, graviton is (1/114 < 1.5/67)
    g, i = tmp_path / "graviton.jsonl", tmp_path / "inferentia.jsonl"
    tune(g, "graviton", configured=SLOW, others=[FAST, MID, WRONG], usd_per_hour=1.0, wrong={WRONG.key})
    tune(i, "inferentia", configured=MID, others=[SLOW], usd_per_hour=1.5)
    return [g, i]


def test_each_processor_shows_its_configured_shape_beside_its_tuned_winner(trials: list[Path]) -> None:
    section = tuned_section([r for f in trials for r in read_trials(f)])
    rows = {r["processor"]: r for r in section["processors"]}
    g = rows["graviton"]
    assert g["tuned"]["key"] == FAST.key and g["configured"]["key"] == SLOW.key and g["same_rung"]
    assert g["tuned"]["rps"] == pytest.approx(114.0) and g["configured"]["rps"] == pytest.approx(24.0)
    assert (g["tuned"]["rps_lo"], g["tuned"]["rps_hi"]) == pytest.approx((102.6, 125.4))
    # USD per million's interval is the capacity's, inverted
    usd = 1.0 / 114 / 3600 * 1e6
    assert g["tuned"]["usd_per_million"] == pytest.approx(usd)
    assert (g["tuned"]["usd_lo"], g["tuned"]["usd_hi"]) == pytest.approx((usd / 1.1, usd / 0.9))
    assert g["capacity_ratio"] == pytest.approx(114 / 24) and g["separate"] is True
    assert g["dropped"].get("failed verify") == 1
    assert rows["inferentia"]["tuned"]["key"] == rows["inferentia"]["configured"]["key"] == MID.key


def test_the_ranking_is_made_between_tuned_shapes(trials: list[Path]) -> None:
    section = tuned_section([r for f in trials for r in read_trials(f)])
    ranked = [(r["rank"], r["processor"]) for r in section["processors"]]
    assert ranked == [(1, "graviton"), (2, "inferentia")]
    # as configured the order was the other way round: that is what the section is for
    g, i = (next(r for r in section["processors"] if r["processor"] == p) for p in ("graviton", "inferentia"))
    assert g["configured"]["usd_per_million"] > i["configured"]["usd_per_million"]
    lines = tuned_lines(section)
    assert lines[0] == "Tuned vs as configured (processors ranked between tuned shapes)"
    assert any(x.startswith("  1. graviton") for x in lines)
    assert any("4.75x the capacity" in x and "intervals separate" in x for x in lines)
    assert any("the configured shape is the tuned one" in x for x in lines)
    assert any("not chosen: 1 failed verify" in x for x in lines)
    assert "ranking in this section is made between tuned shapes" in lines[-1]


def test_settings_only_a_cluster_measures_are_counted_never_ranked(tmp_path: Path) -> None:
    path = tmp_path / "inf.jsonl"
    tune(path, "inferentia", configured=MID, others=[], usd_per_hour=1.5)
    TrialsFile(path).append({"key": "nc2-b1.2.4.8.16.32-acdtype", "rung": "cluster", "status": "not-measured",
                             "note": "needs a deploy", "context": {"processor": "inferentia"}, "verify": None})
    row = tuned_section(read_trials(path))["processors"][0]
    assert row["tuned"]["key"] == MID.key
    assert row["dropped"] == {"not measured here: needs a deploy": 1}


def test_the_html_report_carries_the_section(trials: list[Path]) -> None:
    section = tuned_section([r for f in trials for r in read_trials(f)])
    doc = report.build_document([], warnings=[], slo_p99_ms=250.0, max_error_rate=0.01, prices=DEFAULT_PRICES,
                                inputs=[], generated_at=0.0)
    doc["tuned"] = section
    page = report.render_html(doc, b"", title="t")
    assert '<table id="tuned">' in page and "processors ranked between tuned shapes" in page
    assert FAST.key in page and "intervals separate" in page
    assert tuned_html(None) == "" and '<table id="tuned">' not in report.render_html(
        {**doc, "tuned": None}, b"", title="t")
    json.dumps(doc, allow_nan=False)  # the section goes into report.json as it is


def test_a_file_that_is_not_trials_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"key": "a", "rung": "screen"}\nnot json\n')
    with pytest.raises(ConfigError, match=r"--tune-trials .*x.jsonl: line 2 is not a tune trial record"):
        read_trials(bad)
    with pytest.raises(ConfigError, match=r"cannot be read"):
        read_trials(tmp_path / "missing.jsonl")

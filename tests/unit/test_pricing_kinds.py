"""Pricing kinds: On-Demand ships with the project, Spot / Savings Plan / Reserved come from the user, and every
cost names the kind it used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eks_inference.analysis import report
from eks_inference.cli import main
from eks_inference.config import ConfigError
from eks_inference.fleet.plan import PlanInputs, plan, render
from eks_inference.tables.prices import (
    DEFAULT_PRICES,
    PRICING_KEY,
    PricingKind,
    load_prices,
    price_table_for,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "example-report" / "report.json"


def _cdk_json(tmp_path: Path, rates: dict[str, object]) -> Path:
    p = tmp_path / "cdk.json"
    p.write_text(json.dumps({"app": "x", "context": {PRICING_KEY: rates}}))
    return p


def test_on_demand_is_the_shipped_table_and_says_so() -> None:
    t = price_table_for(PricingKind.ON_DEMAND)
    assert t is DEFAULT_PRICES
    assert t.label == f"On-Demand prices of {DEFAULT_PRICES.date}"


@pytest.mark.parametrize("kind", [PricingKind.SPOT, PricingKind.SAVINGS_PLAN, PricingKind.RESERVED])
def test_a_kind_without_user_rates_is_refused_with_what_to_add(kind: PricingKind) -> None:
    with pytest.raises(ConfigError, match=rf"--pricing {kind.value}: no {kind.label} rates; the project ships "
                                          rf"On-Demand list prices only.*{PRICING_KEY}"):
        price_table_for(kind, {})


def test_a_discount_applies_to_every_on_demand_price_and_keeps_its_date_and_source() -> None:
    rates = {"savings-plan": {"date": "2026-12-01", "source": "our 1-year Compute Savings Plan", "discount": 0.25}}
    t = price_table_for(PricingKind.SAVINGS_PLAN, rates)
    assert t.kind is PricingKind.SAVINGS_PLAN and t.date == "2026-12-01"
    assert t.hourly("inf2.xlarge", "us-east-1") == pytest.approx(0.7582 * 0.75)
    assert t.label == "Savings Plan prices of 2026-12-01"


def test_spot_prices_per_type_and_nothing_else_priced() -> None:
    rates = {"spot": {"date": "2026-12-01", "source": "describe-spot-price-history",
                      "prices": {"us-west-2": {"c7g.2xlarge": 0.11}}}}
    t = price_table_for(PricingKind.SPOT, rates)
    assert t.hourly("c7g.2xlarge", "us-west-2") == 0.11
    assert t.hourly("inf2.xlarge", "us-west-2") is None  # unknown is n/a, never the On-Demand price


def test_bad_entries_are_named_one_line_each() -> None:
    with pytest.raises(ConfigError) as e:
        price_table_for(PricingKind.RESERVED, {"reserved": {"discount": 1.5, "prices": {}}})
    lines = str(e.value).splitlines()
    assert any("no 'date'" in x for x in lines) and any("no 'source'" in x for x in lines)
    assert any("exactly one of 'discount'" in x for x in lines)
    with pytest.raises(ConfigError, match=r"reserved.discount: 1.5 is not a share in \[0, 1\)"):
        price_table_for(PricingKind.RESERVED, {"reserved": {"date": "d", "source": "s", "discount": 1.5}})


def test_a_prices_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "spot.json"
    f.write_text(json.dumps({"kind": "spot", "date": "2026-12-01", "prices": {"us-east-1": {"c7g.xlarge": 0.05}}}))
    with pytest.raises(ConfigError, match="holds Spot rates, but --pricing is on-demand"):
        load_prices(f)
    t = load_prices(f, kind=PricingKind.SPOT)  # the file stands in for a missing cdk.json entry
    assert t.kind is PricingKind.SPOT and t.hourly("c7g.xlarge", "us-east-1") == 0.05


def test_the_report_document_and_page_name_the_kind() -> None:
    t = price_table_for(PricingKind.RESERVED,
                        {"reserved": {"date": "2026-12-01", "source": "3-year RI", "discount": 0.4}})
    doc = report.build_document([], warnings=[], slo_p99_ms=100, max_error_rate=0.01, prices=t, inputs=[],
                                generated_at=0)
    assert doc["prices"]["kind"] == "reserved"
    html = report.render_html(doc, b"", title="t")
    assert "Prices: Reserved, 3-year RI" in html and "USD/hour (Reserved)" in html


def test_plan_reprices_at_the_kind_asked_for_and_says_which() -> None:
    doc = json.loads(EXAMPLE.read_text())
    rates = {"savings-plan": {"date": "2026-12-01", "source": "our plan", "discount": 0.25}}
    sp = price_table_for(PricingKind.SAVINGS_PLAN, rates)
    base = plan(doc, PlanInputs(target_rps=1000, slo_p99_ms=250, accept_wide=True, slo_percentile="p95"),
                source="example")
    cheaper = plan(doc, PlanInputs(target_rps=1000, slo_p99_ms=250, accept_wide=True, slo_percentile="p95",
                                   prices=sp), source="example")
    assert base.planned and cheaper.planned
    assert cheaper.planned[0].usd_per_hour == pytest.approx(base.planned[0].usd_per_hour * 0.75)
    assert cheaper.planned[0].monthly_usd == pytest.approx(base.planned[0].monthly_usd * 0.75)
    assert "instance prices: On-Demand of" in render(base)
    text = render(cheaper)
    assert "instance prices: Savings Plan of 2026-12-01" in text and "(Savings Plan)" in text
    assert cheaper.to_dict()["pricing"] == "savings-plan" and base.to_dict()["pricing"] == "on-demand"


def test_plan_cli_refuses_a_kind_without_rates_in_one_line(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["plan", str(EXAMPLE), "--target-rps", "1000", "--accept-wide", "--pricing", "spot",
               "--cdk-json", str(_cdk_json(tmp_path, {}))])
    err = capsys.readouterr().err
    assert rc == 2 and "--pricing spot: no Spot rates" in err


def test_plan_cli_with_rates_from_cdk_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cdk = _cdk_json(tmp_path, {"reserved": {"date": "2026-12-01", "source": "1-year RI", "discount": 0.3}})
    rc = main(["plan", str(EXAMPLE), "--target-rps", "1000", "--accept-wide", "--slo-percentile", "p95",
               "--pricing", "reserved", "--cdk-json", str(cdk), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["pricing"] == "reserved" and out["prices_date"] == "2026-12-01"

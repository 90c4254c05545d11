"""The report prices an in-cluster target for every pod it runs (its placement), ranks on that, and shows where the
money goes; a local run keeps whole-instance pricing, labelled with the host it was priced for."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
from rich.console import Console

from eks_inference.analysis.aggregate import build_targets
from eks_inference.analysis.report import build_document, cost_split_text, print_report, write_report
from eks_inference.config import Processor, load_environment
from eks_inference.costs import target_placement
from eks_inference.measure.spec import TargetInfo
from eks_inference.tables.prices import DEFAULT_PRICES
from tests.unit.test_loadtest_report import T0, _step, verified

REGION = "us-east-1"


def _target(step_name: str, processor: Processor, instance: str) -> TargetInfo:
    dev = load_environment("dev")
    return TargetInfo(name=step_name, url=f"http://h/{step_name}", processor=processor.value, instance_type=instance,
                      nodes=1, region=REGION, placement=target_placement(dev, dev.models[0], processor).to_arg())


def test_heads_on_system_nodes_are_charged_and_change_the_ranking(tmp_path: Path) -> None:
    """Equal speed per dollar of worker node: without the head, inferentia (0.7582/h at 262 inf/s) and graviton
    (0.29/h at 100 inf/s) cost the same per 1M inferences to within 0.3 %; with the Inferentia head's share of an
    m7i.large (+0.0627/h) inferentia is the dearer one, and the report shows the split."""
    steps = []
    for name, proc, itype, rate in (("graviton", Processor.GRAVITON, "c7g.2xlarge", 100.0),
                                    ("inferentia", Processor.INFERENTIA, "inf2.xlarge", 262.0)):
        st = _step(name, rate=rate, p99_s=0.05, instance=itype)
        steps.append(dataclasses.replace(st, target=_target(name, proc, itype)))
    targets, warnings = build_targets(steps, slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                                      verifications=verified(steps))
    assert [t.target.name for t in targets] == ["graviton", "inferentia"]
    g, i = targets
    assert g.hourly_usd == pytest.approx(0.29)  # one c7g.2xlarge, the head inside it
    assert i.hourly_usd == pytest.approx(0.7582 + 0.1008 * 1200 / 1930)
    assert i.cost_split == pytest.approx({"workers": 0.7582, "head": 0.1008 * 1000 / 1930,
                                          "sidecars": 0.1008 * 200 / 1930})
    assert 0.7582 / 262 < 0.29 / 100  # the bare nodes would have ranked inferentia first
    doc = build_document(targets, warnings=warnings, slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                         inputs=[], generated_at=T0)
    row = doc["targets"][1]
    assert row["cost_split"] == pytest.approx(i.cost_split)
    assert row["price_basis"].startswith("every pod it runs, at its share of its node (workers=inf2.xlarge:1,head=")
    html = write_report(tmp_path, doc, targets, slo_p99_ms=100, title="t")["html"].read_text()
    assert "cost split (USD/hour)" in html and cost_split_text(i.cost_split) in html
    console = Console(file=io.StringIO(), width=250, record=True)
    print_report(console, targets, slo_p99_ms=100, prices=DEFAULT_PRICES, warnings=warnings)
    assert "workers 0.7582 + head 0.0522 + sidecars 0.0104" in console.export_text()


def test_a_placement_type_without_a_price_is_named() -> None:
    st = _step("x", rate=50, p99_s=0.05, instance="inf2.xlarge")
    target = dataclasses.replace(st.target, placement="workers=inf2.xlarge:1,head=m9z.large:0.5")
    st = dataclasses.replace(st, target=target)
    (t,), warnings = build_targets([st], slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                                   verifications=verified([st]))
    assert t.hourly_usd is None and t.rank is None and t.unranked_reason == "no price for m9z.large"
    assert any("no price for m9z.large" in w and '"m9z.large": USD_PER_HOUR' in w for w in warnings)


def test_a_local_run_priced_as_the_host_says_which_host() -> None:
    st = _step("laptop", rate=50, p99_s=0.05, instance=None)
    note = "closest to this host: AMD EPYC, 2 cores x 1 thread; c7a.large has 2 vCPUs on 2 cores"
    target = TargetInfo(name="laptop", url="http://h/laptop", processor="cpu", price_as="c7a.large", price_note=note)
    st = dataclasses.replace(st, target=target)
    (t,), warnings = build_targets([st], slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                                   verifications=verified([st]))
    assert t.hourly_usd == pytest.approx(0.10262) and t.cost_split == {"workers": pytest.approx(0.10262)}
    doc = build_document([t], warnings=warnings, slo_p99_ms=100, max_error_rate=0.01, prices=DEFAULT_PRICES,
                         inputs=[], generated_at=T0)
    assert doc["targets"][0]["price_basis"] == (
        "priced as c7a.large (measured on another machine, not on that instance; closest to this host: AMD EPYC, "
        "2 cores x 1 thread; c7a.large has 2 vCPUs on 2 cores)")

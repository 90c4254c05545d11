"""What a target is priced at, through the real CLI: ``--placement`` (what an in-cluster client passes) and
``--price-as host`` (what ``make demo`` passes), against the stub server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from eks_inference.config import Processor, load_environment
from eks_inference.costs import closest_instance_type, host_cpu, price_fractions, target_placement
from eks_inference.tables.prices import DEFAULT_PRICES

from .conftest import StubServer, cli

pytestmark = pytest.mark.integration

FAST = ("--rate", "20", "--requests", "10", "--warmup", "0.3", "--no-progress")


def _report(results: Path, out: Path) -> dict:
    for p in sorted(results.glob("*.json")):  # the stub's canned outputs pass no verification; record a pass
        doc = json.loads(p.read_text())
        doc["verification"] = {"status": "passed", "summary": "PASSED (recorded by the test)"}
        p.write_text(json.dumps(doc))
    r = cli("loadtest", "report", str(results), "--out", str(out), "--slo-p99-ms", "2000", "--quiet")
    assert r.returncode == 0, r.stderr
    return json.loads((out / "report.json").read_text())


def test_an_in_cluster_target_is_priced_for_its_head_on_the_system_nodes(stub_server: Callable[..., StubServer],
                                                                         tmp_path: Path) -> None:
    dev = load_environment("dev")
    placement = target_placement(dev, dev.models[0], Processor.INFERENTIA).to_arg()
    r = cli("loadtest", "run", "--url", stub_server().url("minilm"), *FAST, "--target-name", "minilm-inferentia",
            "--processor", "inferentia", "--instance-type", "inf2.xlarge", "--region", "us-west-2",
            "--placement", placement, "--out", str(tmp_path / "results" / "r.json"))
    assert r.returncode == 0, r.stderr
    (t,) = _report(tmp_path / "results", tmp_path / "report")["targets"]
    total, split, _ = price_fractions(target_placement(dev, dev.models[0], Processor.INFERENTIA).fractions(),
                                      DEFAULT_PRICES, "us-west-2")
    assert t["target"]["placement"] == placement
    assert t["hourly_usd"] == pytest.approx(total) and t["cost_split"] == pytest.approx(split)
    assert t["hourly_usd"] > t["price_per_instance_hour"]  # the inf2.xlarge and the head's share of an m7i.large


def test_a_bad_placement_is_refused_before_any_request(tmp_path: Path) -> None:
    r = cli("loadtest", "run", "--url", "http://127.0.0.1:9/m", *FAST, "--placement", "workers=inf2.xlarge",
            "--out", str(tmp_path / "r.json"))
    assert r.returncode == 2
    assert "--placement: 'workers=inf2.xlarge' is not ROLE=TYPE:NODES" in r.stderr


def test_the_demo_host_is_priced_as_the_closest_instance_type(stub_server: Callable[..., StubServer],
                                                              tmp_path: Path) -> None:
    expected, why = closest_instance_type(host_cpu())
    r = cli("loadtest", "run", "--url", stub_server().url("minilm"), *FAST, "--target-name", "laptop",
            "--processor", "cpu", "--price-as", "host", "--out", str(tmp_path / "results" / "r.json"))
    assert r.returncode == 0, r.stderr
    (t,) = _report(tmp_path / "results", tmp_path / "report")["targets"]
    assert t["target"]["price_as"] == expected and t["target"]["price_note"] == why
    assert t["price_basis"].startswith(f"priced as {expected} (") and "closest to this host: " in t["price_basis"]
    assert t["hourly_usd"] == pytest.approx(DEFAULT_PRICES.hourly(expected, t["region"]))

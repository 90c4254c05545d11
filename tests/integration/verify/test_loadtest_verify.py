"""``loadtest run --verify`` checks the target before its schedule and records the verdict; the report ranks only
what passed. Real CLI processes against fake model endpoints on 127.0.0.1 (see :mod:`.fakes`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import fakes
from .conftest import ROOT, cli

pytestmark = pytest.mark.integration

LOAD = ("--rates", "4", "--duration", "2", "--warmup", "0.5", "--timeout", "10", "--no-progress",
        "--processor", "cpu", "--price-as", "c7i.large", "--slo-p99-ms", "2000")


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, fakes.FakeTarget]]:
    tmp = tmp_path_factory.mktemp("lt-verify")
    with fakes.running("correct", tmp, model="right") as right, \
            fakes.running("perturbed", tmp, model="wrong") as wrong:
        yield {"right": right, "wrong": wrong}


def _result(folder: Path, target: str) -> dict[str, Any]:
    (path,) = folder.glob(f"*_{target}_client0.json")
    return dict(json.loads(path.read_text()))


def test_verified_and_failing_targets_in_one_report(targets: dict[str, fakes.FakeTarget], tmp_path: Path) -> None:
    out = tmp_path / "results"
    ok = cli("loadtest", "run", "--url", targets["right"].url, "--target-name", "right", "--verify", *LOAD,
             "--out", f"{out}/")
    assert ok.returncode == 0, ok.stderr
    assert "PASSED: " in ok.stderr  # the verdict table goes to the log before the load
    doc = _result(out, "right")
    assert doc["status"] == "complete" and doc["steps"]
    v = doc["verification"]
    assert v["status"] == "passed" and v["checked_by_client"] == 0 and len(v["rows"]) == v["probes"] > 20

    bad = cli("loadtest", "run", "--url", targets["wrong"].url, "--target-name", "wrong", "--verify", *LOAD,
              "--out", f"{out}/")
    assert bad.returncode == 1, bad.stderr
    assert "error: the target's answers FAILED verification (worst input: " in bad.stderr
    assert "nothing measured" in bad.stderr
    doc = _result(out, "wrong")
    assert doc["status"] == "aborted" and doc["steps"] == [] and doc["verification"]["status"] == "failed"
    worst = doc["verification"]["worst"]["probe"]

    unchecked = cli("loadtest", "run", "--url", targets["wrong"].url, "--target-name", "unchecked", *LOAD,
                    "--out", f"{out}/")
    assert unchecked.returncode == 0, unchecked.stderr
    assert _result(out, "unchecked")["verification"] is None

    rep = cli("loadtest", "report", str(out), "--out", str(tmp_path / "report"), "--quiet")
    assert rep.returncode == 0, rep.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    by = {t["target"]["name"]: t for t in report["targets"]}
    assert by["right"]["rank"] == 1 and by["right"]["verified"] == "yes"
    assert by["wrong"]["rank"] is None and by["wrong"]["verified"].startswith(f"FAILED: {worst} (")
    assert by["unchecked"]["rank"] is None and by["unchecked"]["verified"] == "not checked"
    assert by["unchecked"]["unranked_reason"] == "not verified (measure with loadtest run --verify)"
    assert [r["target"] for r in report["ranking"] if r["rank"] is not None] == ["right"]
    html = (tmp_path / "report" / "report.html").read_text()
    assert f"FAILED: {worst}" in html and "PASSED: " in html  # the column, and the verdict in the provenance

    # plan takes only the verified target, and says why not the others (8 requests bound a median, not a p99; one
    # rate measured leaves its capacity without an upper bound, so planning from its lower bound must be accepted)
    plan = cli("plan", str(tmp_path / "report"), "--target-rps", "1000", "--json", "--slo-percentile", "p50",
               "--accept-wide")
    assert plan.returncode == 0, plan.stderr
    doc = json.loads(plan.stdout)
    assert [t["target"] for t in doc["targets"]] == ["right"]
    assert {r["target"]: r["reason"].split(" ")[0] for r in doc["refused"]} == {"wrong": "verification",
                                                                                 "unchecked": "not"}


def test_with_several_clients_only_client_0_verifies(targets: dict[str, fakes.FakeTarget], tmp_path: Path) -> None:
    """Client 0 verifies before it marks itself ready; client 1 records client 0's verdict from its marker."""
    out = tmp_path / "results"
    args = [sys.executable, "-m", "eks_inference.cli", "loadtest", "run", "--url", targets["right"].url,
            "--target-name", "pair", "--verify", *LOAD, "--clients", "2", "--run-id", "pair-1", "--wait-ready", "300",
            "--out", f"{out}/"]
    procs = [subprocess.Popen([*args, "--client-index", str(i)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in (1, 0)]
    deadline = time.monotonic() + 500  # bounds a hang; client 0 computes its fp32 reference at the machine's speed
    outputs = [p.communicate(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    docs = {i: json.loads((out / f"pair-1_pair_client{i}.json").read_text()) for i in (0, 1)}
    assert docs[0]["verification"]["status"] == "passed" and docs[0]["verification"]["rows"]
    v1 = docs[1]["verification"]
    assert v1["status"] == "passed" and v1["recorded_from"] == "client 0's ready marker" and "rows" not in v1
    assert "computing the fp32 reference" not in outputs[0][1]  # client 1 never computed one

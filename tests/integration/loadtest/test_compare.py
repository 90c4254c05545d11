"""``loadtest compare`` end to end: real runs against the stub server, before and after a change.

The stub serves one forward at a time (``--forward``): 5 ms a forward is a capacity of 200 req/s, and a change
that makes each forward 30 % slower (6.5 ms) lowers it to 154. Swept at 100 and 170 req/s, the slower server
keeps up at 100 and falls behind at 170 (its queue grows by 16 requests a second): capacity at the SLO and p99
at 170 req/s both move far beyond the noise, and compare exits 1. Two runs of the unchanged server exit 0: their
figures differ only by noise, which both runs' intervals (and the 10 % floor) cover.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import StubServer, cli

pytestmark = pytest.mark.integration

FORWARD_S = 0.005
SWEEP = ("--rates", "100,170", "--duration", "4", "--warmup", "1", "--no-progress", "--target-name", "stub",
         # A busy machine delays a send now and then: tolerate 50 ms of send lag, far below what is compared.
         "--slo-p99-ms", "250", "--max-lag-ms", "50")


def _run(stub_server: Callable[..., StubServer], forward_s: float, out: Path) -> Path:
    server = stub_server("--forward", str(forward_s))
    r = cli("loadtest", "run", "--url", server.url(), *SWEEP, "--out", f"{out}/")
    assert r.returncode == 0, r.stderr
    return out


def test_compare_flags_a_slower_forward_and_not_the_same_server(stub_server: Callable[..., StubServer],
                                                                 tmp_path: Path) -> None:
    base = _run(stub_server, FORWARD_S, tmp_path / "base")
    again = _run(stub_server, FORWARD_S, tmp_path / "again")
    slower = _run(stub_server, FORWARD_S * 1.3, tmp_path / "slower")

    r = cli("loadtest", "compare", str(base), str(again), "--json", str(tmp_path / "same.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    same = json.loads((tmp_path / "same.json").read_text())
    assert same["regressions"] == [] and "no regression beyond noise" in r.stdout
    assert {f["verdict"] for f in same["targets"][0]["figures"]} <= {"same", "n/a", "better"}

    r = cli("loadtest", "compare", str(base), str(slower), "--json", str(tmp_path / "slow.json"))
    assert r.returncode == 1, r.stdout + r.stderr
    slow = json.loads((tmp_path / "slow.json").read_text())
    assert slow["regressions"] == ["stub"] and "regression beyond noise: stub" in r.stdout
    p99 = next(f for f in slow["targets"][0]["figures"] if f["name"] == "p99_ms")
    assert p99["label"] == "p99 at 170 req/s" and p99["verdict"] == "worse", p99

    # A report written from BASE compares the same as its result folder.
    assert cli("loadtest", "report", str(base), "--out", str(tmp_path / "report"), "--quiet").returncode == 0
    assert cli("loadtest", "compare", str(tmp_path / "report" / "report.json"), str(slower)).returncode == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--min-change", "1.5"], "--min-change: 1.5 must be in [0, 1)"),
    (["--slo-p99-ms", "0"], "--slo-p99-ms: 0.0 must be positive"),
])
def test_compare_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    r = cli("loadtest", "compare", str(tmp_path), str(tmp_path), *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_compare_without_results_exits_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = cli("loadtest", "compare", str(tmp_path / "empty"), str(tmp_path / "nowhere"))
    assert r.returncode == 2 and f"{tmp_path / 'empty'}: no report.json there, and no load-test result files" \
        in r.stderr, r.stderr

"""A target that exports no metrics (the stub server's /info names none) is recorded as such in every step, with
the reason, and the report says so instead of showing zeros; no step waits for metrics that cannot come."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from eks_inference.loadgen.server_metrics import DEFAULT_INTERVAL_S

from .conftest import StubServer, cli

pytestmark = pytest.mark.integration


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def test_steps_of_a_target_without_metrics_say_so(stub_server: Callable[..., StubServer], tmp_path: Path) -> None:
    stub = stub_server()
    r = cli("loadtest", "run", "--url", stub.url(), "--rates", "20,40", "--duration", "1", "--warmup", "0",
            "--no-progress", "--out", f"{tmp_path}/results/")
    assert r.returncode == 0, r.stderr
    (doc,) = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")]
    # No settling pause for metrics that do not exist: such a pause lasts a report interval (Ray's default
    # assumed), far longer than the client's own bookkeeping between two steps, however busy the machine.
    first, second = doc["steps"]
    gap_s = _epoch(second["started_at"]) - _epoch(first["ended_at"])
    assert gap_s < DEFAULT_INTERVAL_S, gap_s
    for step in doc["steps"]:
        srv = step["server_metrics"]
        assert srv["status"] == "unreachable" and "metrics_url" in srv["error"], srv
        assert "requests" not in srv and step["summary"]["server"]["status"] == "unreachable"
    r = cli("loadtest", "report", str(tmp_path / "results"), "--out", str(tmp_path / "report"), "--quiet")
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "report" / "report.html").read_text()
    assert "server metrics unreachable: the target exports no metrics" in html
    rows = (tmp_path / "report" / "report.csv").read_text().splitlines()
    assert all(",unreachable," in row for row in rows[1:])

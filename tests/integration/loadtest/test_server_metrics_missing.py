"""A target that exports no metrics (the stub server's /info names none) is recorded as such in every step, with
the reason, and the report says so instead of showing zeros; no step waits for metrics that cannot come."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import StubServer, cli

pytestmark = pytest.mark.integration


def test_steps_of_a_target_without_metrics_say_so(stub_server: Callable[..., StubServer], tmp_path: Path) -> None:
    stub = stub_server()
    t0 = time.monotonic()
    r = cli("loadtest", "run", "--url", stub.url(), "--rates", "20,40", "--duration", "1", "--warmup", "0",
            "--no-progress", "--out", f"{tmp_path}/results/")
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 30  # no settling pause for metrics that do not exist
    (doc,) = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")]
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

"""A result says which network path its URL took (``--via``): the front door, a model's in-cluster Service, or a URL
served straight. Real CLI subprocesses against the stub server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import StubServer, cli

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("args", "via"), [((), "direct"), (("--via", "front-door"), "front-door"),
                                           (("--via", "service"), "service")])
def test_the_result_records_the_path(stub_server: Callable[..., StubServer], tmp_path: Path,
                                     args: tuple[str, ...], via: str) -> None:
    server = stub_server()
    out = tmp_path / "r.json"
    r = cli("loadtest", "run", "--url", server.url(), "--rate", "20", "--requests", "5", "--warmup", "0.3",
            "--no-progress", *args, "--out", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["status"] == "complete" and doc["provenance"]["via"] == via


def test_an_unknown_path_is_refused_in_one_line(stub_server: Callable[..., StubServer], tmp_path: Path) -> None:
    r = cli("loadtest", "run", "--url", stub_server().url(), "--rate", "20", "--requests", "5", "--via", "alb",
            "--out", str(tmp_path / "r.json"))
    assert r.returncode == 2 and "argument --via: invalid choice: 'alb'" in r.stderr

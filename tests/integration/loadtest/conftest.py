"""Fixtures for load-tester integration tests: real HTTP servers on 127.0.0.1, in their own processes.

The servers run as subprocesses (not threads) so that their event loop never competes with the
client's for the GIL: a stall we inject must be the server's, and a latency we measure must not be
our own test process pausing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eks_inference.serving.local import free_port as free_port  # the tests' servers bind where nothing else is assigned

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class StubServer:
    """A running ``eks_inference.loadgen.stub_server`` process."""

    proc: subprocess.Popen[str]
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, model: str = "stub") -> str:
        return f"{self.base}/{model}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base}/_stats", timeout=5) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_stub(*args: str) -> StubServer:
    proc = subprocess.Popen(
        [sys.executable, "-m", "eks_inference.loadgen.stub_server", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("LISTENING "):
        proc.kill()
        raise RuntimeError(f"stub server did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return StubServer(proc=proc, port=int(line.split()[1]))


@pytest.fixture
def stub_server() -> Iterator[Callable[..., StubServer]]:
    """Factory: ``stub_server("--stall-every", "2", ...)`` starts one; all are stopped after the test."""
    started: list[StubServer] = []

    def make(*args: str) -> StubServer:
        s = start_stub(*args)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()




def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "eks_inference.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})},
    )

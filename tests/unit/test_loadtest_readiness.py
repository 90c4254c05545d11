"""The waiting logic on a simulated clock: how often a waiting client speaks, when it gives up, how the clients'
common start is derived. The target is a real HTTP server on 127.0.0.1 (in a thread, answering at once)."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from eks_inference.loadgen.readiness import BARRIER_MARGIN_S, PROGRESS_EVERY_S, Barrier, NotReady, wait_ready


class _Clock:
    """Simulated monotonic time: ``sleep`` advances it, so a 300 s wait takes no real time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += max(s, 0.001)


@pytest.fixture
def health() -> Iterator[dict[str, object]]:
    """``/m/healthz`` answers ``state["status"]`` with ``state["body"]``; returns the state and the URL."""
    state: dict[str, object] = {"status": 503, "body": {"status": "loading", "waiting_for": "weights"}}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(state["body"]).encode()
            self.send_response(int(state["status"]))  # type: ignore[call-overload]
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/m"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_a_waiting_client_speaks_at_least_every_ten_seconds_and_gives_up_at_the_deadline(
        health: dict[str, object]) -> None:
    clock, said = _Clock(), []
    with pytest.raises(NotReady) as e:
        wait_ready(str(health["url"]), timeout_s=60, say=said.append, clock=clock, sleep=clock.sleep)
    assert clock.now - 1000.0 == pytest.approx(60, abs=1.5)
    assert str(e.value).startswith(f"{health['url']}/healthz was not ready within 60 s (last answer: HTTP 503: ")
    assert '"waiting_for": "weights"' in str(e.value)
    times = [float(s.rsplit("(", 1)[1].split(" s of")[0]) for s in said]
    assert times[0] == 0 and max(b - a for a, b in itertools.pairwise(times)) <= PROGRESS_EVERY_S + 1
    assert PROGRESS_EVERY_S <= 10


def test_wait_ready_returns_once_healthy_and_reports_a_changed_answer(health: dict[str, object]) -> None:
    clock, said = _Clock(), []

    def sleep(s: float) -> None:
        clock.sleep(s)
        if clock.now - 1000.0 >= 3:
            health["status"], health["body"] = 200, {"status": "ok"}

    waited = wait_ready(str(health["url"]), timeout_s=60, say=said.append, clock=clock, sleep=sleep)
    assert 3 <= waited < 5
    assert said[0].startswith(f"waiting for {health['url']}/healthz: HTTP 503: ")
    assert said[-1].startswith(f"{health['url']}/healthz is ready after")


def test_nothing_listening_is_waited_for_too() -> None:
    clock, said = _Clock(), []
    with pytest.raises(NotReady, match=r"not ready within 3 s \(last answer: .*Connection"):
        wait_ready("http://127.0.0.1:9/m", timeout_s=3, say=said.append, clock=clock, sleep=clock.sleep)


def test_barrier_start_is_the_last_ready_time_plus_the_margin(tmp_path: Path) -> None:
    out = str(tmp_path / "results")
    clients = [Barrier(location=out, run_id="r1", target="t", clients=3, index=i) for i in range(3)]
    clients[0].arrive(ready_at=100.0)
    clients[2].arrive(ready_at=130.5)
    # Markers of another run, and of this run id with another client count, are not ours.
    Barrier(location=out, run_id="r0", target="t", clients=3, index=1).arrive(ready_at=50.0)
    Barrier(location=out, run_id="r1", target="t", clients=2, index=1).arrive(ready_at=60.0)
    assert clients[0].ready() == {0: 100.0, 2: 130.5}
    clock, said = _Clock(), []
    with pytest.raises(NotReady, match=r"only 2 of 3 clients of run r1 \(t\) were ready within 20 s \(missing: 1\)"):
        clients[0].wait(timeout_s=20, say=said.append, clock=clock, sleep=clock.sleep)
    assert said and all("missing 1" in s for s in said)
    clients[1].arrive(ready_at=120.0)
    starts = {c.wait(timeout_s=20, say=said.append, clock=clock, sleep=clock.sleep)[0] for c in clients}
    assert starts == {130.5 + BARRIER_MARGIN_S}
    assert sorted(p.name for p in (tmp_path / "results" / "_ready").iterdir())[0].endswith(".ready")

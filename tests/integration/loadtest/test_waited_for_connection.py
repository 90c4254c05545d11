"""``waited_for_connection`` counts measured requests only, each once: it can never exceed the step's requests.

The demo once reported "672 of 600 requests waited for a free connection". The counter was reset at the start
of a step, before its warm-up, so every warm-up request that queued for a connection was counted against the
measured ones (600 measured + 72 warm-up). Here one connection serves a server that takes 50 ms a request (20
req/s) while the client asks for 30 req/s with a warm-up: every request, warm-up or measured, waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from eks_inference.loadgen import runner
from eks_inference.loadgen.client import Engine
from eks_inference.loadgen.payloads import generate_payloads, parse_length_dist
from eks_inference.loadgen.run_config import RunConfig
from eks_inference.measure.spec import Mode, TargetInfo
from eks_inference.measure.steps import summarize

from .conftest import StubServer

pytestmark = pytest.mark.integration

PAYLOADS = generate_payloads(parse_length_dist("uniform:4-16"), inputs_per_request=1, seed=5, count=8)


@pytest.mark.parametrize("engine", [Engine.FAST, Engine.AIOHTTP])
@pytest.mark.parametrize("mode", [Mode.OPEN, Mode.CLOSED])
def test_warm_up_requests_do_not_count_as_waiting(stub_server: Callable[..., StubServer], engine: Engine,
                                                  mode: Mode) -> None:
    server = stub_server("--delay", "0.05")
    url = server.url()
    load = {"rates": (30.0,)} if mode is Mode.OPEN else {"concurrencies": (3,)}
    config = RunConfig(url=url, mode=mode, target=TargetInfo(name="stub", url=url), out="unused.json",
                       run_id="waited", duration_s=2.0, warmup_s=1.0, timeout_s=10.0, max_lag_ms=50.0,
                       connections=1, engine=engine, **load)
    outcome = asyncio.run(runner.run(config, PAYLOADS, server_metrics=False))
    (step,) = outcome.steps
    summary = summarize([step.client_step(config)])
    sent = step.client["sent"]
    waited = summary["waited_for_connection"]
    assert summary["requests"] == sent > 0
    assert waited <= sent, f"{waited} of {sent} measured requests waited"
    # With one connection and more than one request wanting it, most measured requests did wait: the counter
    # still counts what it should (the server saw the warm-up requests too, which are not counted).
    assert waited >= sent // 2
    assert server.stats()["predicts"] > sent

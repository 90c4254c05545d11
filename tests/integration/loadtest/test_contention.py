"""A step measured while the host is overloaded is flagged ``contended``, with the reason, in its summary.

A real CPU hog (four spinning processes per core and one more, each bounded in time) runs during a short
open-loop step against the stub server. With more runnable processes than cores, the
scheduler shares each core between them: the client's thread waits for a core for a large share of the step
(measured on two cores: 56-60 % with nine spinning processes, 47-53 % with five, against the 20 % limit and 2-10 %
on the same busy machine without the hog).
The spinners' CPU goes to neither the client nor the server (found through its listening socket), so the step is
flagged for the foreign share whatever the scheduler does to the client's own wait.
The opposite ("an idle machine is not flagged") is not asserted: on a shared machine another tenant may load it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from eks_inference.loadgen import runner
from eks_inference.loadgen.payloads import generate_payloads, parse_length_dist
from eks_inference.loadgen.run_config import RunConfig
from eks_inference.measure import contention
from eks_inference.measure.spec import Mode, TargetInfo
from eks_inference.measure.steps import summarize

from .conftest import StubServer

pytestmark = pytest.mark.integration

HOG_MAX_S = 60.0
"""Each hog stops by itself after this long, even if the test dies before it can stop them."""
SPIN = ("import sys, time\nend = time.monotonic() + float(sys.argv[1])\nprint('spinning', flush=True)\n"
        "while time.monotonic() < end:\n    pass\n")


@pytest.fixture
def cpu_hog() -> Iterator[list[subprocess.Popen[str]]]:
    procs = [subprocess.Popen([sys.executable, "-c", SPIN, str(HOG_MAX_S)], stdout=subprocess.PIPE, text=True)
             for _ in range(4 * (os.cpu_count() or 1) + 1)]
    try:
        for p in procs:  # each says so once it spins: wait for that, not for a clock
            assert p.stdout is not None and p.stdout.readline().strip() == "spinning"
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)


def test_a_step_under_a_cpu_hog_is_flagged_contended(stub_server: Callable[..., StubServer],
                                                     cpu_hog: list[subprocess.Popen[str]]) -> None:
    server = stub_server()
    url = server.url()
    config = RunConfig(url=url, mode=Mode.OPEN, target=TargetInfo(name="stub", url=url), out="unused.json",
                       run_id="hog", rates=(50.0,), duration_s=3.0, warmup_s=0.5, timeout_s=5.0, max_lag_ms=50.0)
    payloads = generate_payloads(parse_length_dist("uniform:4-16"), inputs_per_request=1, seed=3, count=8)
    outcome = asyncio.run(runner.run(config, payloads, server_metrics=False))
    assert all(p.poll() is None for p in cpu_hog), "a hog stopped before the step ended"
    (summary,) = [summarize([s.client_step(config)]) for s in outcome.steps]
    c = summary["contention"]
    assert summary["contended"], f"not flagged under {len(cpu_hog)} spinning processes: {c}"
    assert c["measured"] and c["reasons"]
    host = outcome.steps[0].client["host"]
    # The stub server's process was found through its listening socket, so the host's CPU splits three ways.
    assert host["server_where"] == "local" and host["server_cpu_s"] is not None, host
    # Nearly all of the machine went to the spinners: neither the client nor the server. Whether the scheduler
    # also made the mostly sleeping client wait for a core long enough to cross its own limit depends on the
    # kernel (measured 10-60 % of the step with the same hog): the foreign share flags it either way.
    assert host["foreign_busy"] is not None and host["foreign_busy"] > contention.FOREIGN_MAX, host
    assert any("other programs' share" in r for r in c["reasons"]) or any(
        "client waiting for a core" in r for r in c["reasons"]), c["reasons"]
    if host["psi_some"] is not None:
        assert host["psi_some"] > contention.PSI_SOME_MAX
    else:
        assert host["runnable_per_core"] > contention.RUNNABLE_PER_CORE_MAX
    # The client's share of its cores and of the host's busy time are reported beside the verdict.
    assert c["client_cpu"] is not None and c["client_share_of_host_busy"] is not None

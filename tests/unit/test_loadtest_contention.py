"""Host sampling from /proc and the contention verdict: parsing real file formats, and the limits in one place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eks_inference.loadgen import host
from eks_inference.measure import contention

# Formats as the kernel writes them (Documentation/accounting/psi.rst; proc(5) for /proc/stat).
STAT = """cpu  1000 0 500 8000 100 0 0 400 0 0
cpu0 500 0 250 4000 50 0 0 200 0 0
ctxt 123
procs_running 3
procs_blocked 0
"""
PRESSURE = """some avg10=38.97 avg60=12.60 avg300=14.66 total=5000000
full avg10=0.00 avg60=0.00 avg300=0.00 total=0
"""


def _proc(tmp: Path, stat: str, pressure: str | None, load: str = "1.50 1.00 0.50 2/100 42\n") -> Path:
    (tmp / "stat").write_text(stat)
    (tmp / "loadavg").write_text(load)
    if pressure is not None:
        (tmp / "pressure").mkdir(exist_ok=True)
        (tmp / "pressure" / "cpu").write_text(pressure)
    return tmp


def test_parse_stat_and_pressure() -> None:
    cpu, running = host.parse_stat(STAT)
    assert cpu == host.CpuTimes(total=10000, idle=8100, steal=400)
    assert running == 3
    assert host.parse_pressure(PRESSURE) == (5000000, 38.97)
    assert host.parse_pressure("") == (None, None)
    assert host.parse_schedstat("162712 411431 2\n") == (411431, 2)


def test_the_event_loop_thread_waiting_for_a_core_is_measured() -> None:
    """On this kernel (Linux with schedstat), the real thread's wait is read: a number in [0, 1], never made up."""
    doc = host.HostSampler().finish()
    if (Path("/proc/thread-self/schedstat")).exists():
        assert doc["client_wait"] is not None and 0.0 <= doc["client_wait"] <= 1.0
    else:
        assert doc["client_wait"] is None and "/proc/thread-self/schedstat" in doc["missing"]


def test_sampler_takes_differences_over_the_step(tmp_path: Path) -> None:
    proc = _proc(tmp_path, STAT, PRESSURE)
    sampler = host.HostSampler(proc)
    # One second later (monotonic time moves on by itself; the /proc counters are what we set).
    _proc(tmp_path, STAT.replace("cpu  1000 0 500 8000 100 0 0 400", "cpu  1600 0 700 8100 100 0 0 500")
          .replace("procs_running 3", "procs_running 5"), PRESSURE.replace("total=5000000", "total=9000000", 1))
    doc = sampler.finish()
    # Ticks: +600 user +200 system +100 idle +100 steal = 1000; busy = 900 of them, steal 100.
    assert doc["host_busy"] == pytest.approx(0.9)
    assert doc["host_steal"] == pytest.approx(0.1)
    assert doc["psi_some"] is not None and doc["psi_some"] > 0  # 4 s of waiting over the (short) wall time, capped
    assert doc["psi_some"] <= 1.0
    assert doc["psi_some_avg10_max"] == pytest.approx(38.97)
    assert doc["runnable_per_core"] == pytest.approx((3 + 5) / 2 / doc["cores"], abs=1e-3)
    assert doc["load1"] == 1.5 and doc["missing"] == ["/proc/thread-self/schedstat"]


def test_a_kernel_without_pressure_says_so(tmp_path: Path) -> None:
    doc = host.HostSampler(_proc(tmp_path, STAT, None)).finish()
    assert doc["psi_some"] is None and "/proc/pressure/cpu" in doc["missing"]


def _client(**host_fields: float | None) -> dict[str, object]:
    base: dict[str, float | None] = {"host_steal": 0.0, "client_wait": 0.0, "psi_some": 0.0, "runnable_per_core": 0.5,
                                     "client_cpu_of_core": 0.2}
    base.update(host_fields)
    return {"host": base}


@pytest.mark.parametrize(("fields", "reason"), [
    ({"host_steal": contention.STEAL_MAX + 0.01}, "host steal"),
    ({"client_wait": None, "psi_some": contention.PSI_SOME_MAX + 0.01}, "CPU pressure"),
    ({"client_wait": contention.CLIENT_WAIT_MAX + 0.01}, "client waiting for a core"),
    ({"psi_some": None, "client_wait": None, "runnable_per_core": contention.RUNNABLE_PER_CORE_MAX + 0.1},
     "runnable tasks per core"),
    ({"client_cpu_of_core": contention.CLIENT_CPU_MAX + 0.01}, "client CPU"),
    # two spinners on two cores beside a server at half a core: pressure 47 %, foreign 74 %
    ({"foreign_busy": 0.7435, "psi_some": 0.4685, "client_wait": 0.0259}, "other programs' share of the host's CPU"),
    ({"foreign_busy": contention.FOREIGN_MAX + 0.01, "psi_some": None, "client_wait": 0.0,
      "runnable_per_core": 1.1}, "other programs' share of the host's CPU"),
])
def test_each_limit_flags_the_step_and_names_itself(fields: dict[str, float | None], reason: str) -> None:
    contended, doc = contention.judge([(0, _client()), (3, _client(**fields))])
    assert contended
    assert len(doc["reasons"]) == 1 and doc["reasons"][0].startswith("client 3: " + reason)
    assert contention.describe(doc) == doc["reasons"][0]


def test_host_pressure_marks_crowded_but_the_clients_own_wait_decides() -> None:
    contended, doc = contention.judge([(0, _client(psi_some=0.9, runnable_per_core=3.0, client_wait=0.05))])
    assert not contended and doc["crowded"] and doc["psi_some"] == 0.9


def test_within_limits_and_run_queue_ignored_when_pressure_is_known() -> None:
    contended, doc = contention.judge([(0, _client(runnable_per_core=4.0))],
                                      {"cpu": {"max_node_busy": 1.0, "nodes": 1, "cores": 2}})
    assert not contended and doc["reasons"] == [] and doc["measured"]
    assert doc["server_cpu"] == {"max_node_busy": 1.0, "nodes": 1, "cores": 2}
    assert doc["limits"] == contention.LIMITS


def test_other_programs_busy_on_a_host_nobody_waited_on_is_not_contention() -> None:
    """A neighbour using spare cores harms no one; only one that crowds the host does."""
    contended, doc = contention.judge([(0, _client(foreign_busy=0.6, psi_some=0.2, client_wait=0.01))])
    assert not contended and doc["foreign_busy"] == 0.6
    contended, _ = contention.judge([(0, _client(foreign_busy=0.6, psi_some=None, runnable_per_core=1.0))])
    assert not contended
    # The server's own crowding of the cores (little foreign share) is the server's cost, not a lie.
    contended, doc = contention.judge([(0, _client(foreign_busy=0.05, psi_some=0.95, client_wait=0.05))])
    assert not contended and doc["crowded"]


def test_a_result_without_host_figures_is_unknown_not_clean() -> None:
    contended, doc = contention.judge([(0, {"cpu_utilization": 0.3})])
    assert not contended and not doc["measured"] and doc["unmeasured_clients"] == [0]
    assert contention.describe(doc) == "host not measured"


def test_server_cpu_comes_from_ray_node_gauges() -> None:
    from eks_inference.loadgen.server_metrics import Snapshot, node_cpu, parse_exposition

    # As Ray's dashboard agent exports them (ray/dashboard/modules/reporter/reporter_agent.py: node_cpu_utilization
    # in percent, node_cpu_count in cores, one series per node).
    text = ('# TYPE ray_node_cpu_utilization gauge\n'
            'ray_node_cpu_utilization{ip="10.0.0.1",SessionName="s"} 87.5\n'
            'ray_node_cpu_utilization{ip="10.0.0.2",SessionName="s"} 40.0\n'
            '# TYPE ray_node_cpu_count gauge\n'
            'ray_node_cpu_count{ip="10.0.0.1",SessionName="s"} 4.0\n'
            'ray_node_cpu_count{ip="10.0.0.2",SessionName="s"} 4.0\n')
    cpu = node_cpu(Snapshot(at=0.0, samples=parse_exposition(text)))
    assert cpu is not None and cpu["max_node_busy"] == 0.875 and cpu["nodes"] == 2 and cpu["cores"] == 8
    assert node_cpu(Snapshot(at=0.0, samples={})) is None


LISTEN = ("import socket, subprocess, sys, time\n"
          "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
          "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
          "print(s.getsockname()[1], child.pid, flush=True)\n"
          "time.sleep(60)\n")


def test_a_server_on_this_machine_is_found_by_its_listening_socket() -> None:
    """The process tree that owns the port is the server's (proc(5): /proc/net/tcp state 0A is LISTEN, and the
    socket's inode appears among the owner's /proc/PID/fd links); a program beside it is not."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-c", LISTEN], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port, child = (int(x) for x in proc.stdout.readline().split())
        where = host.locate_server("127.0.0.1", port)
        assert where.where == "local" and where.root == proc.pid, where
        ticks = host.tree_cpu_ticks(proc.pid)
        assert set(ticks) >= {proc.pid, child} and all(t >= 0 for t in ticks.values())
        # The client's own process is never counted as the server's.
        assert os.getpid() not in ticks
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert host.locate_server("10.0.0.5", 8000) == host.ServerOnHost("remote", note="10.0.0.5 is not this machine")
    nobody = host.locate_server("127.0.0.1", port)
    assert nobody.where == "local" and nobody.root is None and "unknown" in nobody.note


def test_foreign_share_is_what_neither_client_nor_server_spent(tmp_path: Path) -> None:
    """Host ticks 0 -> 1000 with 300 idle: 700 busy; the server's tree spent 300 ticks and the client none, so
    400 of 1000 went elsewhere."""
    proc = _proc(tmp_path, "cpu  0 0 0 0 0 0 0 0\nprocs_running 1\n", None)
    (proc / "42").mkdir()
    stat = "42 (ray::Serve Replica) S 1 42 42 0 -1 0 0 0 0 0 {u} 0 0 0 20 0 1 0 0 0 0\n"
    (proc / "42" / "stat").write_text(stat.format(u=100))
    sampler = host.HostSampler(proc, server=host.ServerOnHost("local", root=42))
    (proc / "stat").write_text("cpu  700 0 0 300 0 0 0 0\nprocs_running 1\n")
    (proc / "42" / "stat").write_text(stat.format(u=400))
    doc = sampler.finish()
    hz = os.sysconf("SC_CLK_TCK")
    assert doc["server_cpu_s"] == round(300 / hz, 3)
    assert doc["foreign_busy"] == pytest.approx(round(max(0.0, (700 - 300) / hz - doc["client_cpu_s"]) / (1000 / hz),
                                                      4), abs=2e-3)
    remote = host.HostSampler(proc, server=host.ServerOnHost("remote"))
    (proc / "stat").write_text("cpu  1400 0 0 600 0 0 0 0\nprocs_running 1\n")
    doc = remote.finish()
    assert doc["server_where"] == "remote" and doc["server_cpu_s"] is None and doc["foreign_busy"] is not None


class _Clock:
    """Stands in for the ``time`` module inside :mod:`eks_inference.loadgen.host`: monotonic time that moves only
    when the test says, and no CPU spent by the client."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def process_time(self) -> float:
        return 0.0


def test_a_neighbour_for_half_the_step_is_seen_in_its_windows(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Four one-second windows on a two-core host (200 ticks each at 100 Hz): the server alone for two, then a
    neighbour taking the idle ticks with pressure at 40 %. Over the whole step the neighbour is diluted under
    both of the whole-step rule's limits (foreign 25 %, pressure 20 %: not crowded), but half the step was
    spent in crowded windows, and the step is contended for that."""
    clock = _Clock()
    monkeypatch.setattr(host, "time", clock)
    hz = os.sysconf("SC_CLK_TCK")
    proc = tmp_path
    (proc / "42").mkdir()
    server_stat = "42 (ray::Serve Replica) S 1 42 42 0 -1 0 0 0 0 0 {u} 0 0 0 20 0 1 0 0 0 0\n"
    state = {"busy": 0, "idle": 0, "server": 0, "psi_us": 0}

    def write() -> None:
        _proc(proc, f"cpu  {state['busy']} 0 0 {state['idle']} 0 0 0 0\nprocs_running 2\n",
              f"some avg10=0.00 avg60=0.00 avg300=0.00 total={state['psi_us']}\n")
        (proc / "42" / "stat").write_text(server_stat.format(u=state["server"]))

    write()
    sampler = host.HostSampler(proc, server=host.ServerOnHost("local", root=42))
    per_window = 2 * hz  # ticks of two cores in one second
    for second in range(4):
        hogged = second >= 2
        server = per_window // 2
        state["server"] += server
        state["busy"] += per_window if hogged else server
        state["idle"] += 0 if hogged else per_window - server
        state["psi_us"] += 400_000 if hogged else 0
        write()
        clock.now += 0.5
        sampler.tick()
        clock.now += 0.5
        sampler.tick()
    doc = sampler.finish()
    assert sampler.windows == 4
    assert doc["foreign_busy"] == pytest.approx(0.25, abs=0.01)
    assert doc["psi_some"] == pytest.approx(0.2)
    assert doc["foreign_busy_window_max"] == pytest.approx(0.5)
    assert doc["foreign_crowded_share"] == pytest.approx(0.5)
    contended, c = contention.judge([(0, {"host": doc})])
    assert contended
    assert c["reasons"] == ["client 0: share of the step the host was crowded by other programs 50% > 10%"]
    assert c["foreign_crowded_share"] == pytest.approx(0.5)
    # The same step without the neighbour: every window is the server's, and nothing is flagged.
    quiet = dict(doc, foreign_busy=0.0, foreign_crowded_share=0.0)
    assert contention.judge([(0, {"host": quiet})])[0] is False


def test_a_server_whose_processes_are_unknown_leaves_the_windows_unjudged(tmp_path: Path) -> None:
    proc = _proc(tmp_path, "cpu  0 0 0 0 0 0 0 0\nprocs_running 1\n", None)
    sampler = host.HostSampler(proc, server=host.ServerOnHost("local", root=None))
    (proc / "stat").write_text("cpu  700 0 0 300 0 0 0 0\nprocs_running 3\n")
    doc = sampler.finish()
    assert doc["foreign_crowded_share"] is None and doc["foreign_busy_window_max"] is None

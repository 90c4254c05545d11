"""What the machine under the load client was doing during a step: read from ``/proc``, never guessed.

A latency measured by a client that shares its cores with a busy neighbour (another tenant's VM stealing the
hypervisor's time, a compiler on the same laptop, the server itself on two cores) is partly the client's own
waiting. :class:`HostSampler` reads, at the start and end of a step and every monitor tick between:

* ``/proc/stat``: the host's CPU split (busy, steal) over the step, and ``procs_running`` (tasks runnable right
  now), whose mean over the step per core says how crowded the run queue was;
* ``/proc/pressure/cpu`` (Linux 4.20+ with PSI; absent on some kernels and containers): the share of the step
  during which at least one runnable task waited for a CPU, from the cumulative ``some total`` (exact over the
  step, not the smoothed ``avg10``, which is recorded beside it);
* ``/proc/loadavg``: the one-minute load, for the record (it lags a short step by design);
* this process's CPU time over the step, as a share of one core (the event loop is one thread) and of the cores
  it may run on (``os.sched_getaffinity``);
* ``/proc/thread-self/schedstat`` (the event loop's own thread): how long it sat runnable but waiting for a core,
  as a share of the step. This is the direct measure of a client starved by its neighbours: a reply it could
  not read while it waited is latency the server did not cause;
* where the target listens on this machine, the CPU time of the server's processes (``/proc/PID/stat`` of the
  process that owns the listening socket and every process below the server's root, :func:`locate_server`), so
  that what the host spent beyond the client and the server, the *foreign* share, is known: another program
  crowding the cores starves the server too, which the client's own wait cannot show. That share is judged over
  the whole step and in windows of :data:`WINDOW_S` (``foreign_crowded_share``: the part of the step during which
  the host was crowded by other programs), so a neighbour that starts or stops part-way through a step is seen
  even where the step's average dilutes it.

What the figures mean for the step is decided in one place, :mod:`eks_inference.measure.contention`. Where a
file is missing (macOS, a locked-down container) its figures are None and the step says so; nothing is made up.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eks_inference.measure.contention import FOREIGN_CROWDED_PSI, FOREIGN_MAX, split_cores

PROC = Path("/proc")
WINDOW_S = 1.0
"""The length of the windows a step is judged in beside its whole: the monitor's ticks close one each time this
much has passed since the last."""


@dataclass(frozen=True)
class CpuTimes:
    """The aggregate ``cpu`` line of ``/proc/stat`` (clock ticks)."""

    total: int
    idle: int
    steal: int


@dataclass(frozen=True)
class HostReading:
    """One look at the host, at monotonic time ``at``."""

    at: float
    process_cpu_s: float
    cpu: CpuTimes | None
    procs_running: int | None
    psi_some_total_us: int | None
    psi_some_avg10: float | None
    load1: float | None
    thread_wait: tuple[int, int] | None = None


def parse_stat(text: str) -> tuple[CpuTimes | None, int | None]:
    """(aggregate CPU times, procs_running) from ``/proc/stat`` text; None where a line is missing."""
    cpu: CpuTimes | None = None
    running: int | None = None
    for line in text.splitlines():
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:]]
            v += [0] * (8 - len(v))
            # user nice system idle iowait irq softirq steal [guest guest_nice, already inside user/nice]
            user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
            cpu = CpuTimes(total=user + nice + system + idle + iowait + irq + softirq + steal,
                           idle=idle + iowait, steal=steal)
        elif line.startswith("procs_running "):
            running = int(line.split()[1])
    return cpu, running


def parse_pressure(text: str) -> tuple[int | None, float | None]:
    """(``some total`` in µs, ``some avg10`` in %) from ``/proc/pressure/cpu`` text."""
    for line in text.splitlines():
        if line.startswith("some "):
            fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
            total = int(fields["total"]) if "total" in fields else None
            avg10 = float(fields["avg10"]) if "avg10" in fields else None
            return total, avg10
    return None, None


def parse_schedstat(text: str) -> tuple[int, int] | None:
    """(nanoseconds the thread spent runnable on a run queue waiting for a CPU, times it was given one): the
    second and third fields of ``schedstat``."""
    fields = text.split()
    return (int(fields[1]), int(fields[2])) if len(fields) >= 3 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS has one, else the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def read_host(proc: Path = PROC) -> HostReading:
    stat = _read(proc / "stat")
    cpu, running = parse_stat(stat) if stat is not None else (None, None)
    pressure = _read(proc / "pressure" / "cpu")
    psi_total, psi_avg10 = parse_pressure(pressure) if pressure is not None else (None, None)
    load = _read(proc / "loadavg")
    load1 = float(load.split()[0]) if load else None
    sched = _read(proc / "thread-self" / "schedstat")
    return HostReading(at=time.monotonic(), process_cpu_s=time.process_time(), cpu=cpu, procs_running=running,
                       psi_some_total_us=psi_total, psi_some_avg10=psi_avg10, load1=load1,
                       thread_wait=parse_schedstat(sched) if sched else None)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServerOnHost:
    """Where the target's server runs as seen from the client: ``remote`` (another machine: every busy cycle
    here beyond the client's is foreign), ``local`` with the root of its process tree, or ``local`` with
    ``root`` None when its processes could not be found (then the foreign share is unknown)."""

    where: str
    root: int | None = None
    note: str = ""


def _listening_inodes(port: int, proc: Path) -> set[str]:
    inodes: set[str] = set()
    for name in ("tcp", "tcp6"):
        text = _read(proc / "net" / name)
        for line in (text or "").splitlines()[1:]:
            f = line.split()
            # sl local_address rem_address st ... inode: st 0A is LISTEN (include/net/tcp_states.h)
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f[9])
    return inodes


def _pids(proc: Path) -> list[int]:
    try:
        return [int(d.name) for d in proc.iterdir() if d.name.isdigit()]
    except OSError:
        return []


def _stat_fields(pid: int, proc: Path) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (which may hold spaces): state is [0], ppid [1],
    utime [11], stime [12]."""
    text = _read(proc / str(pid) / "stat")
    if not text or ")" not in text:
        return None
    return text[text.rindex(")") + 2:].split()


def _parent(pid: int, proc: Path) -> int | None:
    f = _stat_fields(pid, proc)
    return int(f[1]) if f else None


def _ancestors(pid: int, proc: Path) -> list[int]:
    """``pid`` and its parents up to (not including) PID 0."""
    chain: list[int] = []
    while pid > 0 and pid not in chain and len(chain) < 256:
        chain.append(pid)
        parent = _parent(pid, proc)
        if parent is None:
            break
        pid = parent
    return chain


def locate_server(host: str, port: int, proc: Path = PROC, *, me: int | None = None) -> ServerOnHost:
    """The target's processes on this machine: the owner of the socket listening on ``port``, and above it the
    highest ancestor that is not also an ancestor of this client (for ``eks-inference local`` started beside the
    load tester, the ``local`` process, whose tree holds Ray's GCS, raylet, proxy and replicas). A target
    elsewhere is ``remote``; a local one whose socket this user cannot see is ``local`` without a root."""
    if host not in LOOPBACK:
        return ServerOnHost("remote", note=f"{host} is not this machine")
    inodes = _listening_inodes(port, proc)
    owner = None
    if inodes:
        wanted = {f"socket:[{i}]" for i in inodes}
        for pid in _pids(proc):
            try:
                links = [os.readlink(fd) for fd in (proc / str(pid) / "fd").iterdir()]
            except OSError:
                continue
            if wanted.intersection(links):
                owner = pid
                break
    if owner is None:
        return ServerOnHost("local", note=f"no process of this user listens on port {port}; the server's CPU "
                            "and the foreign share are unknown")
    mine = set(_ancestors(os.getpid() if me is None else me, proc))
    root = owner
    for pid in _ancestors(owner, proc):
        if pid in mine:
            break
        root = pid
    if root in mine:  # the server runs inside the client's own process: its CPU is the client's
        return ServerOnHost("local", note="the server runs in the load client's process")
    return ServerOnHost("local", root=root, note=f"server processes under PID {root} (port {port} owned by PID "
                        f"{owner})")


def tree_cpu_ticks(root: int, proc: Path = PROC) -> dict[int, int]:
    """utime + stime (clock ticks) of ``root`` and every process below it, by PID."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for pid in _pids(proc):
        f = _stat_fields(pid, proc)
        if f and len(f) > 12:
            parents[pid] = int(f[1])
            ticks[pid] = int(f[11]) + int(f[12])
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    out: dict[int, int] = {}
    todo = [root] if root in ticks else []
    while todo:
        pid = todo.pop()
        if pid not in out:
            out[pid] = ticks[pid]
            todo.extend(children.get(pid, ()))
    return out


class HostSampler:
    """Readings at a step's start, at each :meth:`tick` and at its end; :meth:`finish` sums them up. With
    ``server`` (from :func:`locate_server`), the server's CPU over the step and the foreign share too."""

    def __init__(self, proc: Path = PROC, server: ServerOnHost | None = None) -> None:
        self.proc = proc
        self.server = server
        self.server_ticks0 = tree_cpu_ticks(server.root, proc) if server is not None and server.root else None
        self.start = read_host(proc)
        self.running: list[int] = []
        self.avg10_max: float | None = None
        self._note(self.start)
        # Per-window view: the server's processes as found at the start (re-read by PID each window, cheap; the
        # whole tree is walked again only at the end), the last window's edge and what the windows found.
        self._window_pids = sorted(self.server_ticks0) if self.server_ticks0 is not None else None
        self._edge = (self.start, self._server_ticks_now())
        self._edge_running: list[int] = []
        self.windows = 0
        self.crowded_s = 0.0
        self.foreign_window_max: float | None = None

    def _note(self, r: HostReading) -> None:
        if r.procs_running is not None:
            self.running.append(r.procs_running)
        if r.psi_some_avg10 is not None:
            self.avg10_max = max(self.avg10_max or 0.0, r.psi_some_avg10)

    def tick(self) -> None:
        r = read_host(self.proc)
        self._note(r)
        if r.procs_running is not None:
            self._edge_running.append(r.procs_running)
        if r.at - self._edge[0].at >= WINDOW_S:
            self._close_window(r)

    def _server_ticks_now(self) -> int | None:
        """The server's CPU ticks so far, from the PIDs found at the start (0 for a remote server)."""
        if self.server is not None and self.server.where == "remote":
            return 0
        if self._window_pids is None:
            return None
        total = 0
        for pid in self._window_pids:
            f = _stat_fields(pid, self.proc)
            if f and len(f) > 12:
                total += int(f[11]) + int(f[12])
        return total

    def _close_window(self, r: HostReading) -> None:
        """Judge the window since the last edge: was the host crowded (CPU pressure over
        :data:`~eks_inference.measure.contention.FOREIGN_CROWDED_PSI`, or without PSI more than one runnable task
        per core) while more than :data:`~eks_inference.measure.contention.FOREIGN_MAX` of its CPU went to
        neither the client nor the server? A neighbour that arrives part-way through a step shows here, where the
        step's average dilutes it."""
        (s, server0), server1 = self._edge, self._server_ticks_now()
        running, self._edge_running = self._edge_running, []
        self._edge = (r, server1)
        wall = r.at - s.at
        if s.cpu is None or r.cpu is None or r.cpu.total <= s.cpu.total or server0 is None or server1 is None:
            return
        self.windows += 1
        ticks = r.cpu.total - s.cpu.total
        busy = ticks - (r.cpu.idle - s.cpu.idle)
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        client_ticks = (r.process_cpu_s - s.process_cpu_s) * hz
        foreign = min(1.0, max(0.0, busy - client_ticks - max(0, server1 - server0)) / ticks)
        self.foreign_window_max = max(self.foreign_window_max or 0.0, foreign)
        if s.psi_some_total_us is not None and r.psi_some_total_us is not None:
            crowded = (r.psi_some_total_us - s.psi_some_total_us) / 1e6 / wall > FOREIGN_CROWDED_PSI
        elif running:
            crowded = sum(running) / len(running) / (os.cpu_count() or 1) > 1.0
        else:
            return
        if crowded and foreign > FOREIGN_MAX:
            self.crowded_s += wall

    def finish(self) -> dict[str, Any]:
        """The step's host record (the ``client["host"]`` of a result file)."""
        end = read_host(self.proc)
        self._note(end)
        if self.windows == 0 or end.at - self._edge[0].at >= WINDOW_S / 2:
            self._close_window(end)
        s = self.start
        wall = max(end.at - s.at, 1e-9)
        cores = usable_cores()
        machine = os.cpu_count() or cores
        cpu_s = end.process_cpu_s - s.process_cpu_s
        doc: dict[str, Any] = {
            "wall_s": round(wall, 3),
            "cores": machine,
            "client_cores": cores,
            "client_cpu_s": round(cpu_s, 3),
            "client_cpu_of_core": round(cpu_s / wall, 4),
            "client_cpu_of_its_cores": round(cpu_s / wall / cores, 4),
            "client_share_of_host_busy": None,
            "client_wait": None,
            "client_wait_per_wakeup_ms": None,
            "host_busy": None,
            "host_steal": None,
            "server_where": self.server.where if self.server is not None else None,
            "server_cpu_s": None,
            "foreign_busy": None,
            "foreign_crowded_share": (round(min(1.0, self.crowded_s / wall), 4) if self.windows else None),
            "foreign_busy_window_max": (round(self.foreign_window_max, 4) if self.foreign_window_max is not None
                                        else None),
            "runnable_per_core": None,
            "psi_some": None,
            "psi_some_avg10_max": self.avg10_max,
            "load1": end.load1,
            "load1_per_core": round(end.load1 / machine, 3) if end.load1 is not None else None,
            "missing": [],
        }
        if s.cpu is None or end.cpu is None:
            doc["missing"].append("/proc/stat")
        elif end.cpu.total > s.cpu.total:  # else too short a step for one clock tick: unknown, not zero
            ticks = end.cpu.total - s.cpu.total
            busy = ticks - (end.cpu.idle - s.cpu.idle)
            doc["host_busy"] = round(busy / ticks, 4)
            doc["host_steal"] = round((end.cpu.steal - s.cpu.steal) / ticks, 4)
            hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
            busy_s = busy / hz
            doc["client_share_of_host_busy"] = round(min(1.0, cpu_s / busy_s), 4) if busy_s > 0 else None
            server_s: float | None = None
            if self.server is not None and self.server.where == "remote":
                server_s = 0.0
            elif self.server is not None and self.server.root is not None and self.server_ticks0 is not None:
                now = tree_cpu_ticks(self.server.root, self.proc)
                server_s = sum(t - self.server_ticks0.get(pid, 0) for pid, t in now.items()) / hz
                doc["server_cpu_s"] = round(server_s, 3)
            if server_s is not None:
                # The host's busy share that neither the client nor the server spent (ticks are machine-wide).
                doc["foreign_busy"] = round(min(1.0, max(0.0, busy_s - cpu_s - server_s) / (ticks / hz)), 4)
        if self.server is not None and self.server.where == "local" and self.server.root is None:
            doc["missing"].append("server processes")
        if self.running:
            # procs_running counts the reader itself: one runnable task per core is a full, not crowded, machine.
            doc["runnable_per_core"] = round(sum(self.running) / len(self.running) / machine, 3)
        if s.thread_wait is not None and end.thread_wait is not None:
            waited_ns, runs = end.thread_wait[0] - s.thread_wait[0], end.thread_wait[1] - s.thread_wait[1]
            doc["client_wait"] = round(min(1.0, waited_ns / 1e9 / wall), 4)
            doc["client_wait_per_wakeup_ms"] = round(waited_ns / 1e6 / runs, 4) if runs > 0 else None
        else:
            doc["missing"].append("/proc/thread-self/schedstat")
        if s.psi_some_total_us is not None and end.psi_some_total_us is not None:
            doc["psi_some"] = round(min(1.0, (end.psi_some_total_us - s.psi_some_total_us) / 1e6 / wall), 4)
        else:
            doc["missing"].append("/proc/pressure/cpu")
        return doc




def pin_client(host: str, *, enabled: bool = True) -> dict[str, Any]:
    """Give this process (the load client) its own core when it measures a server on this machine
    (:func:`eks_inference.measure.contention.split_cores`, the split ``eks-inference local`` also makes); a
    remote target, ``enabled`` False or an OS without affinity leaves it where it is. Returns what was chosen."""
    try:
        usable = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return {"pinned": False, "cores": None, "note": "this OS offers no CPU affinity; the client runs anywhere"}
    if not enabled:
        return {"pinned": False, "cores": usable, "note": "CPU affinity off (--cpu-affinity off)"}
    if host not in LOOPBACK:
        return {"pinned": False, "cores": usable, "note": "the target is not on this machine; nothing to keep apart"}
    server, client, note = split_cores(usable)
    if client == tuple(usable):
        return {"pinned": False, "cores": usable, "note": note}
    os.sched_setaffinity(0, client)
    return {"pinned": True, "cores": list(client), "server_cores": list(server), "note": note}

"""When a step's figures cannot be trusted because the machine, not the server, shaped them.

Each client records per step what its host was doing (``client["host"]``, read from ``/proc`` by
:mod:`eks_inference.loadgen.host`) and its own CPU; the server's CPU comes from its metrics where it exports
them (``server["cpu"]``). A step is ``contended`` when any client crossed one of the limits below; the
``contention`` record keeps the worst figure of each kind across clients and says which limits were crossed and
by whom. Tables, plots and the JSON carry the flag, and a capacity search does not trust a contended step.

The limits, all in one place (docs/trusting-measurements.md explains each):

* host steal above :data:`STEAL_MAX` of the step: the hypervisor gave this VM's time to another tenant;
* the client's event loop waiting for a core (runnable, not running) more than :data:`CLIENT_WAIT_MAX` of the
  step (``/proc/thread-self/schedstat``): the direct measure of a client its neighbours starved;
* where the kernel has no schedstat, CPU pressure above :data:`PSI_SOME_MAX` (for that share of the step at
  least one runnable task on the host waited for a core: ``/proc/pressure/cpu`` "some", exact over the step),
  and without that either, runnable tasks per core above :data:`RUNNABLE_PER_CORE_MAX` on average over the step
  (``procs_running`` of ``/proc/stat``, sampled twice a second);
* the client's own CPU above :data:`CLIENT_CPU_MAX` of one core (its event loop is one thread: past this it
  reads replies late, and its latency is partly its own);
* the host crowded (CPU pressure above :data:`FOREIGN_CROWDED_PSI`, or without PSI more than one runnable task
  per core) while more than :data:`FOREIGN_MAX` of the machine's CPU went to neither the
  client nor the server (``foreign_busy``: the host's busy time less the client's and, for a server on this
  machine, its process tree's). This is the neighbour that starves the *server*: the client, mostly asleep, is
  woken promptly by the scheduler and its own wait stays low, while the server's replicas share their cores with
  the neighbour and its capacity falls. A server on this machine whose processes cannot be found leaves the share
  unknown, and this limit unjudged;
* the same, judged in one-second windows: more than :data:`FOREIGN_WINDOWS_MAX` of the step spent in windows where
  the host was crowded and other programs took more than :data:`FOREIGN_MAX` of it (``foreign_crowded_share``).
  A neighbour that arrives half-way through a step is diluted to under the limit in the step's average, yet it
  slowed every request in its half: a p99 moves when one request in a hundred is slow.

Where the client's own wait is known, host-wide pressure alone marks the step ``crowded`` above
:data:`PSI_SOME_MAX`, but does not flag it: the figure counts every task on the host, and on a small machine the
server's own processes (Ray runs about a dozen) crowd the cores under any load worth measuring, which is the
server's cost, not a lie; who crowded them (the foreign share) decides. Measured on a two-core machine shared
with other work (50-300 req/s against the stub server): the client waited for a core 2-10 % of a step with host
pressure at 74-98 %; with five spinning processes beside it, 47-53 % with pressure at 100 %. The one-minute load
average and the server's CPU are recorded, never judged: the first lags a short step, and a server using all of
its cores is what a capacity test is for.

Locally the client and the server share one machine: :func:`split_cores` says how they keep apart (the client on
a core of its own from three cores up; on two, both share and the step records the client's share).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

STEAL_MAX = 0.05
CLIENT_WAIT_MAX = 0.20
PSI_SOME_MAX = 0.50
RUNNABLE_PER_CORE_MAX = 1.5
CLIENT_CPU_MAX = 0.85
FOREIGN_MAX = 0.25
FOREIGN_CROWDED_PSI = 0.25
"""For the foreign share, crowded already means CPU pressure above this (or, without PSI, more than one runnable
task per core): two spinning processes on two cores beside a server at half a core held pressure at 47 %."""

FOREIGN_WINDOWS_MAX = 0.10
"""The share of a step it may spend crowded by other programs (judged per window) before it is contended: a
tenth of an 8 s step is under one window, so one crowded second passes and two do not. Measured on a two-core
machine: a step half under a two-process hog had a whole-step foreign share of 29 % and pressure 22 % (not
flagged by the whole-step rule), and its p95 rose from about 40 to 280 ms."""

LIMITS = {"host_steal": STEAL_MAX, "client_wait": CLIENT_WAIT_MAX, "psi_some": PSI_SOME_MAX,
          "runnable_per_core": RUNNABLE_PER_CORE_MAX, "client_cpu_of_core": CLIENT_CPU_MAX,
          "foreign_busy": FOREIGN_MAX, "foreign_crowded_share": FOREIGN_WINDOWS_MAX}
"""Each judged figure of a client's ``host`` record and the value above which the step is contended."""

_WHAT = {"host_steal": "host steal", "client_wait": "client waiting for a core", "psi_some": "CPU pressure (some)",
         "runnable_per_core": "runnable tasks per core", "client_cpu_of_core": "client CPU of one core",
         "foreign_busy": "other programs' share of the host's CPU",
         "foreign_crowded_share": "share of the step the host was crowded by other programs"}


def _worst(hosts: Sequence[Mapping[str, Any]], key: str) -> float | None:
    vals = [float(h[key]) for h in hosts if isinstance(h.get(key), int | float)]
    return max(vals) if vals else None


def _crowded(host: Mapping[str, Any]) -> bool:
    """Tasks on the host waited for a core for a good share of the step: PSI where the kernel has it, else the run
    queue (which counts its reader: one runnable task per core is a full machine)."""
    psi = host.get("psi_some")
    if isinstance(psi, int | float):
        return psi > FOREIGN_CROWDED_PSI
    runnable = host.get("runnable_per_core")
    return isinstance(runnable, int | float) and runnable > 1.0


def judge(clients: Sequence[tuple[int, Mapping[str, Any]]],
          server: Mapping[str, Any] | None = None) -> tuple[bool, dict[str, Any]]:
    """``(contended, contention)`` of one step from each client's ``(index, client record)`` and the step's
    server metrics. A client that recorded no host figures (an older result file) makes the step ``unknown``,
    never clean: ``contention["measured"]`` is False when no client measured its host at all."""
    reasons: list[str] = []
    hosts: list[Mapping[str, Any]] = []
    unmeasured: list[int] = []
    for index, client in clients:
        host = client.get("host")
        if not isinstance(host, Mapping):
            unmeasured.append(index)
            continue
        hosts.append(host)
        wait_known = isinstance(host.get("client_wait"), int | float)
        psi_known = isinstance(host.get("psi_some"), int | float)
        for key, limit in LIMITS.items():
            if key == "foreign_busy":
                continue  # judged below, with crowding (the windowed share was judged with it as it was taken)
            if (key == "psi_some" and wait_known) or (key == "runnable_per_core" and (wait_known or psi_known)):
                continue  # the client's own wait is the direct measure; pressure, then the run queue, stand in
            v = host.get(key)
            if isinstance(v, int | float) and v > limit:
                reasons.append(f"client {index}: {_WHAT[key]} {v:.0%} > {limit:.0%}" if key != "runnable_per_core"
                               else f"client {index}: {_WHAT[key]} {v:.2f} > {limit:g}")
        foreign = host.get("foreign_busy")
        if isinstance(foreign, int | float) and foreign > FOREIGN_MAX and _crowded(host):
            reasons.append(f"client {index}: {_WHAT['foreign_busy']} {foreign:.0%} > {FOREIGN_MAX:.0%} while "
                           "the host was crowded")
    server_cpu = (server or {}).get("cpu") if isinstance(server, Mapping) else None
    psi = _worst(hosts, "psi_some")
    contention: dict[str, Any] = {
        "measured": bool(hosts),
        "crowded": psi is not None and psi > PSI_SOME_MAX,
        "client_cpu": _worst(hosts, "client_cpu_of_core"),
        "client_cpu_of_its_cores": _worst(hosts, "client_cpu_of_its_cores"),
        "client_cores": _worst(hosts, "client_cores"),
        "client_share_of_host_busy": _worst(hosts, "client_share_of_host_busy"),
        "client_wait": _worst(hosts, "client_wait"),
        "host_busy": _worst(hosts, "host_busy"),
        "host_steal": _worst(hosts, "host_steal"),
        "psi_some": psi,
        "client_wait_per_wakeup_ms": _worst(hosts, "client_wait_per_wakeup_ms"),
        "psi_some_avg10_max": _worst(hosts, "psi_some_avg10_max"),
        "runnable_per_core": _worst(hosts, "runnable_per_core"),
        "load1_per_core": _worst(hosts, "load1_per_core"),
        "foreign_busy": _worst(hosts, "foreign_busy"),
        "foreign_crowded_share": _worst(hosts, "foreign_crowded_share"),
        "foreign_busy_window_max": _worst(hosts, "foreign_busy_window_max"),
        "server_cpu": dict(server_cpu) if isinstance(server_cpu, Mapping) else None,
        "limits": dict(LIMITS),
        "reasons": reasons,
    }
    if unmeasured:
        contention["unmeasured_clients"] = unmeasured
    return bool(reasons), contention


def describe(contention: Mapping[str, Any]) -> str:
    """One line for a table cell or a warning: the reasons, or that the host was not measured."""
    if not contention.get("measured", False):
        return "host not measured"
    reasons = contention.get("reasons") or []
    return "; ".join(reasons) if reasons else "within limits"


MIN_CORES_TO_SPLIT = 3
"""Below this many usable cores the load client and a local server share them all: one core each on a two-core
machine would halve the server, and the figure measured would be a one-core server's."""


def split_cores(cores: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """How a local server (``eks-inference local``) and the load client on the same machine divide its cores:
    ``(server cores, client cores, what was chosen)``. With :data:`MIN_CORES_TO_SPLIT` or more, the client gets
    the last core to itself and the server the others; with fewer, both get every core (no split), and each
    step's host record says what share of the machine the client took."""
    usable = tuple(sorted(cores))
    if len(usable) >= MIN_CORES_TO_SPLIT:
        return usable[:-1], usable[-1:], (f"server on cores {_span(usable[:-1])}, load client on core "
                                          f"{usable[-1]} (its own)")
    return usable, usable, (f"{len(usable)} core{'s' if len(usable) != 1 else ''}: server and load client share "
                            f"{'them' if len(usable) != 1 else 'it'} (a core each would halve the server); each "
                            "step records the client's share")


def _span(cores: Sequence[int]) -> str:
    return f"{cores[0]}-{cores[-1]}" if len(cores) > 2 and cores[-1] - cores[0] == len(cores) - 1 else \
        ",".join(str(c) for c in cores)

"""When a step's figures cannot be trusted because the machine, not the server, shaped them.

Each client records per step what its host was doing (``client["host"]``, read from ``/proc`` by
:mod:`eks_inference.loadgen.host`) and its own CPU; the server's CPU comes from its metrics where it exports
them (``server["cpu"]``). A step is ``contended`` when any client crossed one of the limits below; the
``contention`` record keeps the worst figure of each kind across clients and says which limits were crossed and
by whom. Tables, plots and the JSON carry the flag, and a capacity search does not trust a contended step.

The limits, all in one place (docs/loadtest-contention.md explains each):

* host steal above :data:`STEAL_MAX` of the step: the hypervisor gave this VM's time to another tenant;
* CPU pressure above :data:`PSI_SOME_MAX`: for that share of the step at least one runnable task waited for
  a core (``/proc/pressure/cpu`` "some", exact over the step);
* where the kernel has no pressure file, runnable tasks per core above :data:`RUNNABLE_PER_CORE_MAX` on
  average over the step (``procs_running`` of ``/proc/stat``, sampled twice a second);
* the client's own CPU above :data:`CLIENT_CPU_MAX` of one core (its event loop is one thread: past this it
  reads replies late, and its latency is partly its own).

The one-minute load average and the server's CPU are recorded, never judged: the first lags a short step, and a
server using all of its cores is what a capacity test is for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

STEAL_MAX = 0.05
PSI_SOME_MAX = 0.10
RUNNABLE_PER_CORE_MAX = 1.5
CLIENT_CPU_MAX = 0.85

LIMITS = {"host_steal": STEAL_MAX, "psi_some": PSI_SOME_MAX, "runnable_per_core": RUNNABLE_PER_CORE_MAX,
          "client_cpu_of_core": CLIENT_CPU_MAX}
"""Each judged figure of a client's ``host`` record and the value above which the step is contended."""

_WHAT = {"host_steal": "host steal", "psi_some": "CPU pressure (some)",
         "runnable_per_core": "runnable tasks per core", "client_cpu_of_core": "client CPU of one core"}


def _worst(hosts: Sequence[Mapping[str, Any]], key: str) -> float | None:
    vals = [float(h[key]) for h in hosts if isinstance(h.get(key), int | float)]
    return max(vals) if vals else None


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
        psi_known = isinstance(host.get("psi_some"), int | float)
        for key, limit in LIMITS.items():
            if key == "runnable_per_core" and psi_known:
                continue  # pressure is the better measure of the same thing; the run queue is its stand-in
            v = host.get(key)
            if isinstance(v, int | float) and v > limit:
                reasons.append(f"client {index}: {_WHAT[key]} {v:.0%} > {limit:.0%}" if key != "runnable_per_core"
                               else f"client {index}: {_WHAT[key]} {v:.2f} > {limit:g}")
    server_cpu = (server or {}).get("cpu") if isinstance(server, Mapping) else None
    contention: dict[str, Any] = {
        "measured": bool(hosts),
        "client_cpu": _worst(hosts, "client_cpu_of_core"),
        "client_cpu_of_its_cores": _worst(hosts, "client_cpu_of_its_cores"),
        "client_cores": _worst(hosts, "client_cores"),
        "client_share_of_host_busy": _worst(hosts, "client_share_of_host_busy"),
        "host_busy": _worst(hosts, "host_busy"),
        "host_steal": _worst(hosts, "host_steal"),
        "psi_some": _worst(hosts, "psi_some"),
        "psi_some_avg10_max": _worst(hosts, "psi_some_avg10_max"),
        "runnable_per_core": _worst(hosts, "runnable_per_core"),
        "load1_per_core": _worst(hosts, "load1_per_core"),
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

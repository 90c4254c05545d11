"""One step merged across its clients, and whether it meets the SLO.

Pure functions over parsed result files: the same code summarises a single client's step at the end of
``loadtest run`` (a merge of one, which the run's SLO search judges) and many pods' steps in ``loadtest report``,
so the two can never disagree. Histograms add exactly; throughput is summed over the window all clients were
measuring (the per-second series make that possible), never inferred from averaged percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eks_inference.measure.contention import judge
from eks_inference.measure.intervals import add_step_intervals
from eks_inference.measure.spec import Mode, StepSpec, TargetInfo
from eks_inference.measure.stats import (
    PERCENTILES,
    StepStats,
    achieved_rps,
    common_window,
    few_samples,
    latency_summary_ms,
    merge,
    ok_in_window,
    percentiles_us,
)

CLIENT_SATURATED_CPU = 0.9
"""A client that used this much of its core may itself be adding latency; the step is flagged."""


@dataclass(frozen=True, kw_only=True)
class ClientStep:
    """One client's record of one step, as found in its result file."""

    server: Mapping[str, Any] | None = None
    """The target's own metrics of the step, read by this client (client 0), or None."""
    source: str
    run_id: str
    client_index: int
    clients: int
    target: TargetInfo
    spec: StepSpec
    stats: StepStats
    client: Mapping[str, Any] = field(default_factory=dict)
    status: str = "complete"

    @property
    def window(self) -> tuple[float, float]:
        return (self.stats.window_start, self.stats.window_start + self.stats.window_s)


def _throughput(steps: Sequence[ClientStep]) -> tuple[float, str]:
    """Successful requests/s summed over clients, and how it was computed."""
    if len(steps) == 1:
        return achieved_rps(steps[0].stats), "single client: successes over the time they took"
    window = common_window(st.window for st in steps)
    if window is not None:
        counts = [ok_in_window(st.stats.series, *window) for st in steps]
        seconds = counts[0][1]
        if seconds >= 2:
            return sum(n for n, _ in counts) / seconds, f"sum over the common window of {seconds} s"
    total = sum(achieved_rps(st.stats) for st in steps)
    return total, "sum of per-client rates (clients' windows overlap by less than 2 whole seconds)"


def summarize(steps: Sequence[ClientStep]) -> dict[str, Any]:
    """The summary of one step across its clients: the fields every result and report row carries."""
    if not steps:
        raise ValueError("summarize() needs at least one client step")
    first = steps[0]
    spec = first.spec
    hist = merge(st.stats.latency_hist for st in steps)
    lag = merge(st.stats.lag_hist for st in steps)
    ok = sum(st.stats.ok for st in steps)
    errors_by_kind: dict[str, int] = {}
    for st in steps:
        for k, v in st.stats.errors_by_kind.items():
            errors_by_kind[k] = errors_by_kind.get(k, 0) + v
    errors = sum(errors_by_kind.values())
    requests = ok + errors
    inferences = sum(st.stats.inferences for st in steps)
    throughput, method = _throughput(steps)
    mins = [st.stats.min_us for st in steps if st.stats.min_us is not None]
    maxs = [st.stats.max_us for st in steps if st.stats.max_us is not None]
    lag_max = [st.stats.lag_max_us for st in steps if st.stats.lag_max_us is not None]
    lag_p = percentiles_us(lag)
    cpus = [float(st.client.get("cpu_utilization", 0.0)) for st in steps]
    behind = any(bool(st.client.get("behind_schedule")) for st in steps)
    server = server_side(steps)
    contended, contention = judge([(st.client_index, st.client) for st in steps], server)
    summary = {
        "target": first.target.name,
        "run_id": first.run_id,
        "step": spec.index,
        "mode": spec.mode.value,
        "arrival": spec.arrival.value if spec.mode is Mode.OPEN else None,
        "requested_rate": spec.rate,
        "concurrency": spec.concurrency,
        "clients": len(steps),
        "clients_expected": first.clients,
        "requests": requests,
        "ok": ok,
        "errors": errors,
        "errors_by_kind": dict(sorted(errors_by_kind.items())),
        "error_rate": (errors / requests) if requests else 0.0,
        "unfinished": sum(st.stats.unfinished for st in steps),
        "throughput_rps": throughput,
        "throughput_method": method,
        "inferences": inferences,
        "inferences_per_s": throughput * (inferences / ok) if ok else 0.0,
        "latency_ms": latency_summary_ms(hist, min_us=min(mins) if mins else None,
                                         max_us=max(maxs) if maxs else None,
                                         sum_us=sum(st.stats.sum_us for st in steps)),
        "few_samples": few_samples(hist.get_total_count()),
        "schedule_lag_ms": {"p50": lag_p["p50"] / 1000.0, "p99": lag_p["p99"] / 1000.0,
                            "max": (max(lag_max) / 1000.0) if lag_max else None},
        "behind_schedule": behind,
        "client_cpu_max": max(cpus) if cpus else 0.0,
        "client_saturated": any(c >= CLIENT_SATURATED_CPU for c in cpus),
        "waited_for_connection": sum(int(st.client.get("waited_for_connection", 0)) for st in steps),
        "status": "complete" if all(st.status == "complete" for st in steps) else "partial",
        "server": server,
        "contended": contended,
        "contention": contention,
    }
    models = family_split(steps, throughput)
    if models is not None:
        summary["models"] = models
    return add_step_intervals(summary, hist, percentiles=PERCENTILES, per_second_ok=_second_counts(steps),
                              min_us=min(mins) if mins else None, max_us=max(maxs) if maxs else None)


def family_split(steps: Sequence[ClientStep], throughput_rps: float) -> dict[str, Any] | None:
    """A family target's answers split cold (the replica loaded the member for it) and warm, merged exactly across
    clients; None when the target marked none (a single model). ``load_rate_per_s`` is the rate of cold answers,
    the loads the mix forced; ``hit_ratio`` the share of warm answers; ``working_set`` what ``plan`` sizes a
    model-aware family from (:mod:`eks_inference.measure.working_set`), from the client that read the target's
    ``/info`` (the lowest index that did), absent in a result written before it was recorded."""
    marked = [st for st in steps if st.stats.cold_hist is not None]
    if not marked:
        return None
    ok = sum(st.stats.ok for st in marked)
    cold = sum(st.stats.cold for st in marked)
    cold_hist = merge(st.stats.cold_hist or "" for st in marked)
    warm_hist = merge(st.stats.warm_hist or "" for st in marked)

    def ms(hist: Any) -> dict[str, float | None]:
        if hist.get_total_count() == 0:
            return {"p50": None, "p99": None}
        p = percentiles_us(hist)
        return {"p50": p["p50"] / 1000.0, "p99": p["p99"] / 1000.0}

    recorded = sorted(((st.client_index, ws) for st in marked if (ws := st.stats.working_set) is not None),
                      key=lambda p: (p[1].get("routing") is None, p[0]))
    return {"cold": cold, "warm": ok - cold, "hit_ratio": (ok - cold) / ok if ok else None,
            "load_rate_per_s": throughput_rps * cold / ok if ok else 0.0,
            "cold_ms": ms(cold_hist), "warm_ms": ms(warm_hist),
            **({"working_set": dict(recorded[0][1])} if recorded else {})}


def _second_counts(steps: Sequence[ClientStep]) -> list[int]:
    """Successes per whole second of the window every client measured, summed over the clients."""
    window = common_window(st.window for st in steps)
    if window is None:
        return []
    first, last = math.ceil(window[0]), math.floor(window[1])
    counts = dict.fromkeys(range(first, last), 0)
    for st in steps:
        for b in st.stats.series:
            if b.t in counts:
                counts[b.t] += b.ok
    return [counts[t] for t in sorted(counts)]


def server_side(steps: Sequence[ClientStep]) -> dict[str, Any]:
    """The server's account of a step, from the one client that read it (the lowest index that did), and the
    split of the clients' mean latency it implies: queue and model time from the server, the rest (network,
    proxy and HTTP handling) by difference. A target whose metrics could not be read says so, never zeros."""
    recorded = sorted((st for st in steps if st.server is not None), key=lambda st: st.client_index)
    if not recorded:
        return {"status": "not recorded"}
    first = recorded[0]
    doc = dict(first.server or {})
    doc["read_by_client"] = first.client_index
    if doc.get("status") not in ("ok", "partial"):
        return doc
    n = sum(st.stats.ok for st in steps)
    mean_ms = (sum(st.stats.sum_us for st in steps) / n / 1000.0) if n else None
    queue, model = doc.get("queue_ms"), doc.get("model_ms")
    if mean_ms is not None and isinstance(queue, int | float) and isinstance(model, int | float):
        doc["split_ms"] = {"client_mean": round(mean_ms, 3), "queue": queue, "model": model,
                           "network_and_proxy": round(mean_ms - queue - model, 3)}
    return doc


def slo_verdict(summary: Mapping[str, Any], *, slo_p99_ms: float, max_error_rate: float,
                percentile: str = "p99") -> tuple[bool, str]:
    """Whether a step counts as meeting the SLO, and why not.

    A step only counts when it was measured honestly: enough successes, the error budget kept, the
    client on schedule (a client that fell behind under-sent, so its latency is not the server's).
    ``percentile`` is the one the latency target applies to (p99 unless the steps are too short to support it).
    """
    p99 = summary["latency_ms"][percentile]
    if summary["ok"] == 0 or p99 is None:
        return False, "no successful responses"
    if summary["error_rate"] > max_error_rate:
        return False, f"error rate {summary['error_rate']:.2%} > {max_error_rate:.2%}"
    if summary["behind_schedule"]:
        return False, "client fell behind its schedule (add clients or lower the rate)"
    if summary["status"] != "complete":
        return False, "step did not complete"
    if p99 > slo_p99_ms:
        return False, f"{percentile} {p99:.1f} ms > SLO {slo_p99_ms:g} ms"
    return True, f"{percentile} {p99:.1f} ms <= SLO {slo_p99_ms:g} ms"

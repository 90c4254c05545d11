"""Capacity at the SLO: the highest offered rate whose latency percentile meets the SLO, as estimate and interval.

Each open-loop step (its repeats combined, :mod:`eks_inference.measure.repeats`) is judged with confidence:
``pass`` when the 95 % interval of the SLO percentile lies under the SLO, ``fail`` when it lies above, ``unsure``
when it straddles it, ``untrusted`` when it was contended or the client fell behind. Then, assuming latency
grows with load:

* ``rps_hi`` — the lowest rate that failed: the capacity lies below it;
* ``rps_lo`` — the highest rate under that which passed: the capacity is at least this, with 95 % confidence at
  that step;
* ``rps`` — the highest rate under ``rps_hi`` whose *estimate* meets the SLO with no trusted step below it whose
  estimate misses it (at least ``rps_lo``): a rate that met the SLO above one that missed it was luck, not capacity.

Unsure and untrusted steps never tighten the interval: a contended probe drops out and the bracket around it
widens, instead of the estimate silently falling. Per replica and per node divide by the replicas the steps
ran on (recorded on every step) and the nodes that served the target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eks_inference.measure.intervals import CONFIDENCE, relative_width
from eks_inference.measure.repeats import judge, point_verdict


def capacity_at_slo(steps: Sequence[Mapping[str, Any]], *, slo_ms: float, max_error_rate: float,
                    percentile: str = "p99", nodes: int = 1) -> dict[str, Any]:
    """The capacity block of a series from its step summaries (repeats already combined)."""
    probes = []
    for s in steps:
        if s.get("mode") != "open" or not s.get("requested_rate") or s.get("schedule"):
            continue
        verdict, why = judge(s, slo_ms=slo_ms, max_error_rate=max_error_rate, percentile=percentile)
        meets = point_verdict(s, slo_ms=slo_ms, max_error_rate=max_error_rate, percentile=percentile)[0]
        probes.append((float(s["requested_rate"]), verdict, meets and verdict != "untrusted", why, s))
    probes.sort(key=lambda p: p[0])
    fails = [r for r, v, *_ in probes if v == "fail"]
    hi = min(fails) if fails else None
    below = [p for p in probes if hi is None or p[0] < hi]
    passes = [r for r, v, *_ in below if v == "pass"]
    lo = max(passes) if passes else None
    misses = [r for r, v, meets, *_ in below if not meets and v != "untrusted"]
    first_miss = min(misses) if misses else None
    meeting = [r for r, _, meets, *_ in below if meets and (first_miss is None or r < first_miss)]
    lucky = [r for r, _, meets, *_ in below if meets and first_miss is not None and r > first_miss]
    est = max(meeting) if meeting else lo
    if est is not None and lo is not None:
        est = max(est, lo)
    at = next((p[4] for p in probes if est is not None and p[0] == est), None)
    replicas = ((at or {}).get("replicas") or {}).get("count")
    moved = any(((p[4].get("replicas") or {}).get("changed")) for p in probes)
    counts = {c for p in probes for c in ((p[4].get("replicas") or {}).get("seen") or [])}
    excluded = [{"requested_rate": r, "verdict": v, "why": why} for r, v, _, why, _ in probes
                if v in ("untrusted", "unsure")]
    notes = []
    if lo is None:
        notes.append("no rate was shown to meet the SLO with 95 % confidence")
    if lucky:
        notes.append(f"{', '.join(f'{r:,.4g}' for r in lucky)} req/s met the SLO above {first_miss:,.4g} req/s, whose "
                     "estimate missed it: the estimate stays below the lower miss (more repeats settle it)")
    if hi is None and probes:
        notes.append("no rate was shown to miss the SLO: the capacity may lie above the highest rate measured")
    if moved or len(counts) > 1:
        notes.append(f"the serving replicas changed during the measurement ({sorted(counts)}): pin them "
                     "(autoscaling off) to measure capacity")
    if any(v == "untrusted" for _, v, *_ in probes):
        notes.append("steps measured while the host was contended or the client fell behind are left out; the "
                     "interval is wider for it")

    def per(x: float | None, n: int | None) -> float | None:
        return None if x is None or not n else x / n

    return {
        "percentile": percentile, "slo_ms": slo_ms, "max_error_rate": max_error_rate, "confidence": CONFIDENCE,
        "rps": est, "rps_lo": lo, "rps_hi": hi, "relative_width": relative_width(est, lo, hi),
        "throughput_rps_at": None if at is None else at.get("throughput_rps"),
        "replicas": replicas, "nodes": nodes,
        "per_replica_rps": per(est, replicas), "per_replica_rps_lo": per(lo, replicas),
        "per_replica_rps_hi": per(hi, replicas),
        "per_node_rps": per(est, nodes), "per_node_rps_lo": per(lo, nodes), "per_node_rps_hi": per(hi, nodes),
        "probes": [{"requested_rate": r, "verdict": v, "meets_at_estimate": m, "why": why}
                   for r, v, m, why, _ in probes],
        "excluded": excluded, "notes": notes,
    }


def capacity_text(cap: Mapping[str, Any]) -> str:
    """One line: ``capacity at p99 <= 250 ms: 61.3 req/s (95 % interval 56.2-65.0)``, or why there is none."""
    head = f"capacity at {cap['percentile']} <= {cap['slo_ms']:g} ms"
    if cap["rps"] is None:
        return f"{head}: none shown ({'; '.join(cap['notes']) or 'no open-loop steps'})"
    lo = "?" if cap["rps_lo"] is None else f"{cap['rps_lo']:,.4g}"
    hi = "open" if cap["rps_hi"] is None else f"{cap['rps_hi']:,.4g}"
    reps = f", {cap['per_replica_rps']:,.4g} per replica" if cap.get("per_replica_rps") else ""
    return f"{head}: {cap['rps']:,.4g} req/s (95 % interval {lo} to {hi}{reps})"

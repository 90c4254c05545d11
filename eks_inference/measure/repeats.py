"""Repeats of one step combined into one figure with its interval, and the SLO judged with confidence.

A step measured N times (interleaved with the other steps, see the runner) is one point of the curve: its
estimate pools the repeats, its interval is the hull of the pooled interval and the repeats' own estimates
(:mod:`eks_inference.measure.intervals`), and it is ``unstable`` when the repeats disagree beyond chance. A repeat
measured while the host was contended (``contended``) is left out of the figure, and said so; when every repeat
was, the step is itself contended and no verdict rests on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eks_inference.measure.intervals import (
    UNSTABLE_THROUGHPUT_SPREAD,
    hull,
    intervals_overlap,
    mean_interval,
    method_note,
    percentile_bounds_us,
    wilson,
)
from eks_inference.measure.stats import PERCENTILES, few_samples, latency_summary_ms, merge
from eks_inference.measure.steps import ClientStep, slo_verdict, summarize

SLO_PERCENTILES = ("p50", "p90", "p95", "p99", "p999")


def _bound(d: Mapping[str, Any], key: str, side: str) -> float | None:
    """``d[key_lo]`` / ``d[key_hi]``; a summary written before intervals existed has only the estimate."""
    name = f"{key}_{side}"
    return d[name] if name in d else d.get(key)


def summarize_repeats(groups: Sequence[Sequence[ClientStep]], *, percentile: str = "p99") -> dict[str, Any]:
    """One step's figure from its repeats (each a list of its clients' records), with intervals and stability."""
    if not groups:
        raise ValueError("summarize_repeats() needs at least one repeat")
    per = [summarize(g) for g in groups]
    for g, s in zip(groups, per, strict=True):
        s["repeat"] = g[0].spec.repeat
    if len(per) == 1:
        s = per[0]
        s["repeats_measured"] = 1
        s["repeats_excluded"] = []
        s["unstable"], s["unstable_reason"] = False, None
        s["replicas"] = _replicas([s])
        return s
    trusted = [(g, s) for g, s in zip(groups, per, strict=True) if _distrust(s) is None]
    used = trusted or list(zip(groups, per, strict=True))
    excluded = [{"repeat": s["repeat"], "why": _distrust(s)} for s in per if trusted and _distrust(s) is not None]
    steps = [st for g, _ in used for st in g]
    sums = [s for _, s in used]
    out = dict(sums[0])
    hist = merge(st.stats.latency_hist for st in steps)
    mins = [st.stats.min_us for st in steps if st.stats.min_us is not None]
    maxs = [st.stats.max_us for st in steps if st.stats.max_us is not None]
    lat = latency_summary_ms(hist, min_us=min(mins) if mins else None, max_us=max(maxs) if maxs else None,
                             sum_us=sum(st.stats.sum_us for st in steps))
    for name, (lo, hi) in percentile_bounds_us(hist, PERCENTILES, min_us=min(mins) if mins else None,
                                               max_us=max(maxs) if maxs else None).items():
        estimates = [s["latency_ms"][name] for s in sums]
        lat[f"{name}_lo"], lat[f"{name}_hi"] = hull((None if lo is None else lo / 1000.0,
                                                     None if hi is None else hi / 1000.0), estimates)
    errors_by_kind: dict[str, int] = {}
    for s in sums:
        for k, v in s["errors_by_kind"].items():
            errors_by_kind[k] = errors_by_kind.get(k, 0) + v
    ok, errors = sum(s["ok"] for s in sums), sum(s["errors"] for s in sums)
    requests = ok + errors
    thr = sum(s["throughput_rps"] for s in sums) / len(sums)
    inf = sum(s["inferences_per_s"] for s in sums) / len(sums)
    rates = [r for s in sums for r in s.get("batch_rates", [])]
    # batch means where the steps were long enough to cut into batches, else Student-t across the repeats
    pooled = rates if len(rates) >= 2 else [s["throughput_rps"] for s in sums]
    t_lo, t_hi = hull(mean_interval(pooled, centre=thr), [s["throughput_rps"] for s in sums]) if thr else (0.0, 0.0)
    per_request = inf / thr if thr else 0.0
    e_lo, e_hi = hull(wilson(errors, requests), [s["error_rate"] for s in sums])
    out.update({
        "requests": requests, "ok": ok, "errors": errors, "errors_by_kind": dict(sorted(errors_by_kind.items())),
        "error_rate": errors / requests if requests else 0.0, "error_rate_lo": e_lo, "error_rate_hi": e_hi,
        "unfinished": sum(s["unfinished"] for s in sums), "inferences": sum(s["inferences"] for s in sums),
        "throughput_rps": thr, "throughput_rps_lo": t_lo, "throughput_rps_hi": t_hi,
        "throughput_method": f"mean of {len(sums)} repeats ({sums[0]['throughput_method']})",
        "inferences_per_s": inf,
        "inferences_per_s_lo": None if t_lo is None else t_lo * per_request,
        "inferences_per_s_hi": None if t_hi is None else t_hi * per_request,
        "latency_ms": lat, "few_samples": few_samples(hist.get_total_count()),
        "behind_schedule": any(s["behind_schedule"] for s in sums),
        "client_saturated": any(s["client_saturated"] for s in sums),
        "client_cpu_max": max(s["client_cpu_max"] for s in sums),
        "waited_for_connection": sum(s["waited_for_connection"] for s in sums),
        "status": "complete" if all(s["status"] == "complete" for s in sums) else "partial",
        "contended": not trusted and any(s.get("contended", False) for s in sums),
        "repeat": None, "repeats": len(sums), "repeats_measured": len(per), "repeats_excluded": excluded,
        "repeat_values": [{"repeat": s["repeat"], "throughput_rps": s["throughput_rps"],
                           "error_rate": s["error_rate"], "contended": bool(s.get("contended", False)),
                           **{k: s["latency_ms"][k] for k in PERCENTILES}} for s in per],
        "interval_method": method_note(),
        "batch_rates": rates,
        "replicas": _replicas(sums),
    })
    out["unstable"], out["unstable_reason"] = instability(sums, percentile=percentile)
    return out


def _distrust(s: Mapping[str, Any]) -> str | None:
    """Why one measurement cannot be trusted (its figures are the machine's or the client's, not the server's)."""
    if s.get("contended", False):
        return "measured while the host was contended"
    if s["behind_schedule"]:
        return "the client fell behind its schedule"
    if s["status"] != "complete":
        return "it did not complete"
    return None


def instability(sums: Sequence[Mapping[str, Any]], *, percentile: str = "p99") -> tuple[bool, str | None]:
    """Whether repeats disagree beyond chance: their ``percentile`` intervals share no value, or their throughputs
    span more than :data:`UNSTABLE_THROUGHPUT_SPREAD` of their median."""
    if len(sums) < 2:
        return False, None
    pct = [(s["latency_ms"].get(f"{percentile}_lo"), s["latency_ms"].get(f"{percentile}_hi")) for s in sums]
    if all(s["ok"] for s in sums) and not intervals_overlap(pct):
        shown = ", ".join(f"{s['latency_ms'][percentile]:.1f}" for s in sums)
        return True, f"the repeats' {percentile} ({shown} ms) have no common value within their 95 % intervals"
    thr = sorted(s["throughput_rps"] for s in sums)
    mid = thr[len(thr) // 2]
    if mid > 0 and (thr[-1] - thr[0]) / mid > UNSTABLE_THROUGHPUT_SPREAD:
        return True, (f"the repeats' throughputs ({', '.join(f'{t:.1f}' for t in thr)} req/s) differ by more than "
                      f"{UNSTABLE_THROUGHPUT_SPREAD:.0%}")
    return False, None


def _replicas(sums: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The serving replicas each repeat saw (the target's metrics, start and end of the step), and if they moved."""
    seen = []
    for s in sums:
        r = ((s.get("server") or {}).get("replicas") or {})
        seen += [v for v in (r.get("start"), r.get("end")) if isinstance(v, int)]
    if not seen:
        return {"count": None, "changed": False, "seen": []}
    return {"count": seen[-1] if len(set(seen)) == 1 else None, "changed": len(set(seen)) > 1,
            "seen": sorted(set(seen))}


def judge(summary: Mapping[str, Any], *, slo_ms: float, max_error_rate: float,
          percentile: str = "p99") -> tuple[str, str]:
    """``pass`` (the percentile's 95 % interval lies at or under the SLO, errors within their bound), ``fail``
    (the interval lies above it, or errors are above their bound with 95 % confidence), ``unsure`` (the interval
    straddles it) or ``untrusted`` (contended, behind schedule or incomplete: no verdict rests on it), and why.

    The confidence is about the latency percentile. The error rate must be within its bound as measured: a 1 %
    bound cannot be shown with 95 % confidence from fewer than ~370 requests, so requiring it would send every
    short step to ``unsure``; it fails only when over the bound with confidence or as measured.
    """
    if summary.get("contended", False):
        return "untrusted", "measured while the host was contended"
    if summary["ok"] == 0:
        return "fail", "no successful responses"
    if summary["behind_schedule"]:
        return "untrusted", "client fell behind its schedule (add clients or lower the rate)"
    if summary["status"] != "complete":
        return "untrusted", "step did not complete"
    lat = summary["latency_ms"]
    est = lat[percentile]
    lo, hi = _bound(lat, percentile, "lo"), _bound(lat, percentile, "hi")
    e_lo = _bound(summary, "error_rate", "lo")
    if e_lo is not None and e_lo > max_error_rate:
        return "fail", f"error rate {summary['error_rate']:.2%} > {max_error_rate:.2%} (95 % lower bound {e_lo:.2%})"
    if summary["error_rate"] > max_error_rate:
        return "unsure", f"error rate {summary['error_rate']:.2%} > {max_error_rate:.2%}, within chance of the bound"
    shown = f"{percentile} {est:.1f} ms [{_ms(lo)}, {_ms(hi)}]"
    if lo is not None and lo > slo_ms:
        return "fail", f"{shown} > SLO {slo_ms:g} ms"
    if hi is not None and hi <= slo_ms:
        return "pass", f"{shown} <= SLO {slo_ms:g} ms"
    return "unsure", f"{shown} straddles the SLO {slo_ms:g} ms"


def _ms(v: float | None) -> str:
    return "open" if v is None else f"{v:.1f}"


def point_verdict(summary: Mapping[str, Any], *, slo_ms: float, max_error_rate: float,
                  percentile: str = "p99") -> tuple[bool, str]:
    """The estimate's verdict (:func:`~eks_inference.measure.steps.slo_verdict`) at any percentile."""
    return slo_verdict(summary, slo_p99_ms=slo_ms, max_error_rate=max_error_rate, percentile=percentile)

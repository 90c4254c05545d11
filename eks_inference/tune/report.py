"""What a tune shows: trials ranked by USD per million at the SLO, the Pareto frontier of throughput against p99,
and the comparison of the winner with the configured shape.

The plot follows the load-test report (:mod:`eks_inference.analysis.report`): a matplotlib ``Figure`` without
pyplot, rendered to PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from eks_inference.tune.search import eligible


def _point(rec: Mapping[str, Any]) -> tuple[float, float] | None:
    x, y = rec.get("throughput_rps"), rec.get("p99_ms")
    if x is None or y is None or rec.get("status") != "measured":
        return None
    return float(x), float(y)


def pareto_front(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Trials no other trial beats on both throughput (higher) and p99 (lower), by throughput ascending. Only
    verified trials count: a fast wrong answer frames nothing."""
    pts = [(p, r) for r in records if eligible(r) and (p := _point(r)) is not None]
    front = [r for p, r in pts
             if not any(q[0] >= p[0] and q[1] <= p[1] and q != p for q, _ in pts)]
    return sorted(front, key=lambda r: float(r["throughput_rps"]))


def why_dropped(rec: Mapping[str, Any]) -> str | None:
    """Why a trial cannot win, in words; None when it may."""
    if eligible(rec):
        return None
    v = rec.get("verify") or {}
    if rec.get("status") == "failed-verify" or (v and v.get("status") != "passed"):
        return f"failed verify: {v.get('summary') or v.get('reason') or 'no verdict'}"
    if rec.get("status") != "measured":
        return rec.get("note") or str(rec.get("status"))
    return f"no capacity shown at the SLO ({'; '.join((rec.get('capacity') or {}).get('notes') or []) or 'n/a'})"


def ranking(records: Sequence[Mapping[str, Any]], rung: str | None = None) -> list[Mapping[str, Any]]:
    """Trials of ``rung`` (all when None): eligible ones by USD per million (then capacity), the rest after."""
    rows = [r for r in records if rung is None or r.get("rung") == rung]

    def order(r: Mapping[str, Any]) -> tuple[int, float, float]:
        if not eligible(r):
            return (1, 0.0, 0.0)
        usd = r.get("usd_per_million")
        return (0, usd if usd is not None else float("inf"), -float(r["capacity"]["rps"]))
    return sorted(rows, key=order)


def _rate(v: Any) -> str:
    return "?" if v is None else f"{float(v):,.4g}"


def capacity_words(cap: Mapping[str, Any] | None) -> str:
    if not cap or cap.get("rps") is None:
        return "none shown"
    hi = "open" if cap.get("rps_hi") is None else _rate(cap["rps_hi"])
    return f"{_rate(cap['rps'])} req/s [{_rate(cap.get('rps_lo'))}, {hi}]"


def table_lines(records: Sequence[Mapping[str, Any]], *, configured_key: str | None = None) -> list[str]:
    """A plain-text table: rank, shape, rung, verify, capacity with its interval, p99 there, USD per million."""
    head = f"{'#':>3}  {'shape':<24} {'rung':<8} {'verify':<7} {'capacity at SLO [95 % interval]':<34} " \
           f"{'p99 ms':>7} {'$/1M':>8}"
    out = [head]
    n = 0
    for r in ranking(records):
        ok = eligible(r)
        n += ok
        usd = r.get("usd_per_million")
        mark = " (configured)" if r.get("key") == configured_key else ""
        p99 = r.get("p99_ms")
        out.append(f"{(str(n) if ok else '-'):>3}  {r['key']:<24} {r['rung']:<8} "
                   f"{((r.get('verify') or {}).get('status') or '-'):<7} {capacity_words(r.get('capacity')):<34} "
                   f"{('-' if p99 is None else f'{p99:.0f}'):>7} {('-' if usd is None or not ok else f'{usd:.3f}'):>8}"
                   f"{mark}")
        why = why_dropped(r)
        if why:
            out.append(f"{'':>5}dropped: {why}")
    return out


def separate(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool | None:
    """Whether two capacity intervals are apart (a's lower bound above b's upper bound, or the reverse); None when
    either lacks the bound that would decide."""
    if not a or not b:
        return None
    if a.get("rps_lo") is not None and b.get("rps_hi") is not None and a["rps_lo"] > b["rps_hi"]:
        return True
    if b.get("rps_lo") is not None and a.get("rps_hi") is not None and b["rps_lo"] > a["rps_hi"]:
        return True
    if None in (a.get("rps_lo"), b.get("rps_lo")):
        return None
    return False


def build_pareto_figure(records: Sequence[Mapping[str, Any]], *, slo_ms: float, percentile: str, title: str,
                        winner_key: str | None = None, configured_key: str | None = None) -> Any:
    """Throughput against p99 at each trial's capacity estimate; verified trials filled, the rest hollow, the
    frontier drawn, the winner starred and the configured shape ringed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5.6), dpi=110, layout="constrained")
    ax = fig.subplots()
    rungs = sorted({str(r.get("rung")) for r in records})
    for i, rung in enumerate(rungs):
        color = f"C{i}"
        good = [_point(r) for r in records if r.get("rung") == rung and eligible(r) and _point(r)]
        bad = [_point(r) for r in records if r.get("rung") == rung and not eligible(r) and _point(r)]
        if good:
            ax.scatter([p[0] for p in good if p], [p[1] for p in good if p], color=color, label=f"{rung} (verified)")
        if bad:
            ax.scatter([p[0] for p in bad if p], [p[1] for p in bad if p], facecolors="none", edgecolors=color,
                       label=f"{rung} (dropped)")
    front = pareto_front(records)
    if front:
        ax.plot([float(r["throughput_rps"]) for r in front], [float(r["p99_ms"]) for r in front], "-", color="black",
                lw=1, drawstyle="steps-post", label="Pareto frontier")
    for key, marker, label in ((winner_key, "*", "winner"), (configured_key, "s", "as configured")):
        at = [r for r in records if key and r.get("key") == key and _point(r)]
        if at:
            best = max(at, key=lambda r: str(r.get("rung")))
            ax.scatter([best["throughput_rps"]], [best["p99_ms"]], marker=marker, s=220, facecolors="none",
                       edgecolors="red", linewidths=1.5, label=label, zorder=5)
    ax.axhline(slo_ms, color="red", lw=1.0, ls="-.", label=f"SLO {percentile} {slo_ms:g} ms")
    ax.set_xlabel("throughput at the capacity estimate (req/s)")
    ax.set_ylabel(f"{percentile} latency there (ms)")
    ax.set_title("Trials: throughput against latency (lower right is better)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    fig.suptitle(title)
    return fig


def render_pareto_png(records: Sequence[Mapping[str, Any]], **kw: Any) -> bytes:
    fig = build_pareto_figure(records, **kw)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()

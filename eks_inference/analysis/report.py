"""Writers for the price-performance report: JSON, CSV, PNG, a self-contained HTML page, console tables.

The numbers come from :mod:`aggregate`; this module only lays them out, so every format shows the same
figures and the same caveats: one series per run of a target, "priced as" next to a cost that was not
measured on that instance, a mark on every percentile computed from fewer samples than it needs, and a
reason next to every series that has no rank. The HTML embeds the PNG (base64) and carries no external
references: it can be attached to a ticket or opened from S3 as a single file.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import io
import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from eks_inference import __version__
from eks_inference.analysis.aggregate import TargetReport
from eks_inference.analysis.tuned import tuned_html, tuned_lines
from eks_inference.measure.contention import describe as describe_contention
from eks_inference.measure.results import REPORT_FORMAT, REPORT_FORMAT_VERSION
from eks_inference.measure.spec import TargetInfo
from eks_inference.measure.stats import MIN_SAMPLES, MIN_TAIL_SAMPLES
from eks_inference.tables.prices import PriceTable, pricing_kind

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CSV_COLUMNS = (
    "series", "target", "run_id", "verified", "processor", "instance_type", "priced_as", "nodes", "region", "step",
    "mode",
    "arrival", "requested_rate", "concurrency", "clients", "requests", "ok", "errors", "error_rate",
    "throughput_rps", "inferences_per_s", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms",
    "few_samples", "behind_schedule", "client_saturated", "slo_met", "slo_reason", "price_per_instance_hour",
    "hourly_usd", "usd_per_million_inferences_at_step",
    "server_status", "server_requests", "server_mean_batch_size", "server_queue_ms", "server_model_ms",
    "network_and_proxy_ms", "server_padding_ratio", "server_replicas_start", "server_replicas_end",
    # 95 % bounds of the figures above (see eks_inference.measure.intervals), and how many repeats they rest on
    "repeats", "unstable", "slo_confidence", "throughput_rps_lo", "throughput_rps_hi", "inferences_per_s_lo",
    "inferences_per_s_hi", "error_rate_lo", "error_rate_hi", "p50_ms_lo", "p50_ms_hi", "p90_ms_lo", "p90_ms_hi",
    "p95_ms_lo", "p95_ms_hi", "p99_ms_lo", "p99_ms_hi", "usd_per_million_inferences_at_step_lo",
    "usd_per_million_inferences_at_step_hi",
    # what the host was doing (eks_inference.measure.contention): a contended step is not the server's figure
    "contended", "contention", "client_wait", "host_psi_some", "host_steal", "host_foreign_busy",
    "host_foreign_crowded_share", "client_cpu_of_core",
)
PERCENTILE_LABELS = {"p50": "p50", "p90": "p90", "p95": "p95", "p99": "p99", "p999": "p99.9"}
FEW = "†"
PERCENTILE_RULE = (
    f"{FEW} marks a percentile computed from fewer successful requests than it needs: at least "
    f"{MIN_TAIL_SAMPLES} beyond it, i.e. "
    + ", ".join(f"{PERCENTILE_LABELS[k]} ≥ {v:,}" for k, v in MIN_SAMPLES.items())
    + "; treat it as a rough value (the p99 of 25 requests is their maximum)."
)


def build_document(
    targets: Sequence[TargetReport],
    *,
    warnings: Sequence[str],
    slo_p99_ms: float,
    max_error_rate: float,
    prices: PriceTable,
    inputs: Sequence[Mapping[str, Any]],
    generated_at: float,
) -> dict[str, Any]:
    """``report.json``: everything shown anywhere in the report, machine-readable."""
    return {
        "format": REPORT_FORMAT,
        "format_version": REPORT_FORMAT_VERSION,
        "generated_at": dt.datetime.fromtimestamp(generated_at, tz=dt.UTC).isoformat(timespec="seconds"),
        "tool_version": __version__,
        "slo_p99_ms": slo_p99_ms,
        "max_error_rate": max_error_rate,
        "prices": {"date": prices.date, "source": prices.source, "note": prices.note, "kind": prices.kind.value},
        "percentile_min_samples": dict(MIN_SAMPLES),
        "percentile_rule": PERCENTILE_RULE,
        "capacity_rule": CAPACITY_RULE,
        "capacity": [{"label": t.label, "target": t.target.name, "run_id": t.run_id, **(t.capacity or {})}
                     for t in targets if t.capacity],
        "ranking": [
            {"rank": t.rank, "label": t.label, "target": t.target.name, "run_id": t.run_id,
             "verified": t.verified, "unranked_reason": t.unranked_reason,
             "usd_per_million_inferences": t.usd_per_million_inferences,
             "best_inferences_per_s": t.best.summary["inferences_per_s"] if t.best else None,
             "hourly_usd": t.hourly_usd, "pricing": prices.kind.value, "priced_instance_type": t.target.priced_type,
             "priced_as": t.target.price_as is not None}
            for t in targets
        ],
        "targets": [t.to_dict() for t in targets],
        "warnings": list(warnings),
        "inputs": list(inputs),
    }


def _kind_label(prices: Mapping[str, Any]) -> str:
    """The pricing kind a report's costs used (reports from before kinds existed used On-Demand list prices)."""
    return pricing_kind(prices.get("kind"), where="report prices.kind").label


COST_PARTS = ("workers", "head", "sidecars")


def cost_split_text(split: Mapping[str, float | None] | None) -> str:
    """``workers 0.2225 + head 0.0579 + sidecars 0.0096`` (USD per hour): where a target's hourly cost goes."""
    if not split:
        return "n/a"
    return " + ".join(f"{part} {_fmt(split[part], ',.4f')}" for part in COST_PARTS if part in split)


def _cost_at(t: TargetReport, inferences_per_s: float) -> float | None:
    if t.hourly_usd is None or inferences_per_s <= 0:
        return None
    return t.hourly_usd / (inferences_per_s * 3600.0) * 1e6


def csv_rows(targets: Sequence[TargetReport]) -> list[dict[str, Any]]:
    rows = []
    for t in targets:
        for p in t.points:
            s, lat = p.summary, p.summary["latency_ms"]
            rows.append({
                "series": t.label, "target": t.target.name, "run_id": s["run_id"], "verified": t.verified,
                "processor": t.target.processor,
                "instance_type": t.target.instance_type, "priced_as": t.target.price_as, "nodes": t.target.nodes,
                "region": t.region, "step": s["step"], "mode": s["mode"], "arrival": s["arrival"],
                "requested_rate": s["requested_rate"], "concurrency": s["concurrency"], "clients": s["clients"],
                "requests": s["requests"], "ok": s["ok"], "errors": s["errors"], "error_rate": s["error_rate"],
                "throughput_rps": s["throughput_rps"], "inferences_per_s": s["inferences_per_s"],
                "p50_ms": lat["p50"], "p90_ms": lat["p90"], "p95_ms": lat["p95"], "p99_ms": lat["p99"],
                "p999_ms": lat["p999"], "max_ms": lat["max"], "few_samples": ";".join(s.get("few_samples", [])),
                "behind_schedule": s["behind_schedule"], "client_saturated": s["client_saturated"],
                "slo_met": p.slo_met, "slo_reason": p.slo_reason,
                "price_per_instance_hour": t.price_per_instance_hour, "hourly_usd": t.hourly_usd,
                "usd_per_million_inferences_at_step": _cost_at(t, s["inferences_per_s"]),
                **_server_csv(s.get("server")),
                **_interval_csv(t, s),
                **_contention_csv(s),
            })
    return rows


def _contention_csv(s: Mapping[str, Any]) -> dict[str, Any]:
    c = s.get("contention") or {}
    return {"contended": bool(s.get("contended")), "contention": describe_contention(c) if c else "not recorded",
            "client_wait": c.get("client_wait"), "host_psi_some": c.get("psi_some"),
            "host_steal": c.get("host_steal"), "host_foreign_busy": c.get("foreign_busy"),
            "host_foreign_crowded_share": c.get("foreign_crowded_share"), "client_cpu_of_core": c.get("client_cpu")}


def contention_note(s: Mapping[str, Any]) -> str:
    """``contended: <reasons>`` for a flagged step, ``host crowded (pressure N %)`` for a crowded one, else ""."""
    c = s.get("contention") or {}
    if s.get("contended"):
        return "contended: " + (describe_contention(c) if c else "a repeat was measured on a contended host")
    if c.get("crowded"):
        return f"host crowded (CPU pressure {c['psi_some']:.0%})"
    return ""


def _interval_csv(t: TargetReport, s: Mapping[str, Any]) -> dict[str, Any]:
    lat = s["latency_ms"]
    inf_lo, inf_hi = s.get("inferences_per_s_lo"), s.get("inferences_per_s_hi")
    return {
        "repeats": s.get("repeats", 1), "unstable": s.get("unstable", False),
        "slo_confidence": s.get("slo_confidence"),
        **{k: s.get(k) for k in ("throughput_rps_lo", "throughput_rps_hi", "inferences_per_s_lo",
                                 "inferences_per_s_hi", "error_rate_lo", "error_rate_hi")},
        **{f"{k}_ms_{side}": lat.get(f"{k}_{side}") for k in ("p50", "p90", "p95", "p99") for side in ("lo", "hi")},
        # more throughput is cheaper: the cost's lower bound comes from the throughput's upper bound
        "usd_per_million_inferences_at_step_lo": _cost_at(t, inf_hi) if inf_hi else None,
        "usd_per_million_inferences_at_step_hi": _cost_at(t, inf_lo) if inf_lo else None,
    }


def _server_csv(server: Mapping[str, Any] | None) -> dict[str, Any]:
    srv = server or {"status": "not recorded"}
    split = srv.get("split_ms") or {}
    replicas = srv.get("replicas") or {}
    return {"server_status": srv.get("status"), "server_requests": srv.get("requests"),
            "server_mean_batch_size": srv.get("mean_batch_size"), "server_queue_ms": srv.get("queue_ms"),
            "server_model_ms": srv.get("model_ms"), "network_and_proxy_ms": split.get("network_and_proxy"),
            "server_padding_ratio": srv.get("padding_ratio"), "server_replicas_start": replicas.get("start"),
            "server_replicas_end": replicas.get("end")}


SERVER_RULE = (
    "Where the time goes: the clients' mean latency (successful measured requests) beside the server's own "
    "account of the step, read from the target's metrics by one client at the step's start and end. Queue: from "
    "the replica admitting a request to the start of the forward that carried it; model: that forward (tokenize, "
    "run, decode); network and proxy: the rest of the clients' mean (connection, HAProxy, HTTP and JSON). The "
    "server's means cover every request of the step, warm-up included; its request count includes other clients'. "
    "A target whose metrics could not be read says why instead of showing zeros."
)


def _server_cells(s: Mapping[str, Any]) -> list[str]:
    """Client mean, network and proxy, queue, model, served requests, mean batch, padding, replicas, and notes
    (or the reason the server's side is missing)."""
    srv = s.get("server") or {"status": "not recorded"}
    status = srv.get("status")
    client_mean = _fmt(s["latency_ms"].get("mean"), ",.2f")
    if status not in ("ok", "partial"):
        why = srv.get("error") or ("the results were written without them (an older load tester, or "
                                   "--no-server-metrics)" if status == "not recorded" else status)
        return [client_mean, "n/a", "n/a", "n/a", "n/a", "n/a", "n/a", "n/a", f"server metrics {status}: {why}"]
    split = srv.get("split_ms") or {}
    replicas = srv.get("replicas") or {}
    r0, r1 = replicas.get("start"), replicas.get("end")
    reps = "n/a" if r0 is None and r1 is None else (f"{r0}" if r0 == r1 else f"{_fmt(r0, 'd')} → {_fmt(r1, 'd')}")
    pad = srv.get("padding_ratio")
    notes = list(srv.get("notes") or [])
    return [client_mean, _fmt(split.get("network_and_proxy"), ",.2f"), _fmt(srv.get("queue_ms"), ",.2f"),
            _fmt(srv.get("model_ms"), ",.2f"), _fmt(srv.get("requests"), ",d"),
            _fmt(srv.get("mean_batch_size"), ",.2f"), "n/a" if pad is None else f"{pad:.0%}", reps,
            "; ".join(notes)]


def write_csv(path: Path, targets: Sequence[TargetReport]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for row in csv_rows(targets):
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})


# -- plot --------------------------------------------------------------------------------------------

def _cost_label(t: TargetReport) -> str:
    """The series, and what its cost is computed from (the instance it ran on, or the type it is priced as)."""
    if t.target.priced_type is None:
        return t.label
    hourly = f", ${t.price_per_instance_hour:,.4f}/h" if t.price_per_instance_hour is not None else ""
    return f"{t.label}\n{t.target.instances_label}{hourly}"


def build_figure(targets: Sequence[TargetReport], *, slo_p99_ms: float, title: str,
                 slo_percentile: str = "p99") -> Figure:
    """Latency percentiles vs throughput (one curve per run of a target: p99 solid, p50 dashed) and USD per 1M
    inferences for every series, a reason in place of a bar for those without a cost."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(13, 6.2), dpi=110, layout="constrained")
    ax, bx = fig.subplots(1, 2, width_ratios=[3, 2])
    colors = [f"C{i}" for i in range(10)]
    plotted: list[float] = []
    handles: list[Any] = []
    few_p99 = False
    contended_any = False
    for i, t in enumerate(targets):
        color = colors[i % len(colors)]
        for mode in ("open", "closed"):
            pts = [p for p in t.points if p.summary["mode"] == mode and p.summary["ok"] > 0]
            if not pts:
                continue
            # In order of offered load: past saturation the curve bends back, which is the point.
            pts.sort(key=lambda p: (p.summary["requested_rate"] or 0, p.summary["concurrency"] or 0))
            x = [p.summary["inferences_per_s"] for p in pts]
            p99 = [p.summary["latency_ms"]["p99"] for p in pts]
            p50 = [p.summary["latency_ms"]["p50"] for p in pts]
            plotted += [v for v in p99 + p50 if v]
            label = t.label + (" (closed loop)" if mode == "closed" else "")
            ls = "-" if mode == "open" else ":"
            (line,) = ax.plot(x, p99, ls, color=color, label=f"{label} p99")
            handles.append(line)
            (line50,) = ax.plot(x, p50, "--", marker=".", color=color, alpha=0.6, label=f"{label} p50")
            handles.append(line50)
            _interval_bars(ax, pts, x, p99, color)
            few = ["p99" in p.summary.get("few_samples", []) for p in pts]
            few_p99 = few_p99 or any(few)
            ax.scatter([v for v, f in zip(x, few, strict=True) if not f],
                       [v for v, f in zip(p99, few, strict=True) if not f], marker="o", color=color, zorder=4)
            ax.scatter([v for v, f in zip(x, few, strict=True) if f],
                       [v for v, f in zip(p99, few, strict=True) if f], marker="o", facecolors="white",
                       edgecolors=color, linewidths=1.5, zorder=4)
            busy = [p for p in pts if p.summary.get("contended")]
            if busy:
                contended_any = True
                ax.scatter([p.summary["inferences_per_s"] for p in busy],
                           [p.summary["latency_ms"]["p99"] for p in busy], marker="s", s=140, facecolors="none",
                           edgecolors="black", linewidths=1.2, zorder=5)
            bad = [p for p in pts if p.summary["behind_schedule"]]
            if bad:
                ax.scatter([p.summary["inferences_per_s"] for p in bad],
                           [p.summary["latency_ms"]["p99"] for p in bad], marker="x", s=80, color="black",
                           zorder=5)
        if t.best is not None:
            ax.scatter([t.best.summary["inferences_per_s"]], [t.best.summary["latency_ms"]["p99"]], marker="*",
                       s=220, color=color, edgecolor="black", zorder=6)
    slo_line = ax.axhline(slo_p99_ms, color="red", lw=1.2, ls="-.", label=f"SLO {slo_percentile} {slo_p99_ms:g} ms")
    handles.append(slo_line)
    # The SLO line always lies inside the axes with room above it, whatever the points do, and carries its own
    # label at the right end; the legend sits below the plot, where it can cover nothing.
    lo = min([*plotted, slo_p99_ms]) / 1.6
    hi = max([*plotted, slo_p99_ms]) * 2.2
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    ax.text(0.995, slo_p99_ms, f"SLO {slo_p99_ms:g} ms ", color="red", fontsize=8, ha="right", va="bottom",
            transform=ax.get_yaxis_transform())
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}" if str(v)[0] in "235" else ""))
    ax.set_xlabel("throughput (successful inferences/s)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title("Latency vs throughput (★ best step within SLO, × client behind, □ contended host)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if contended_any:
        handles.append(Line2D([], [], marker="s", ls="", markerfacecolor="none", markeredgecolor="black",
                              markersize=9, label="contended host: not the server's figure"))
    handles.append(Line2D([], [], marker="|", ls="-", color="grey", alpha=0.6, markersize=8,
                          label="95 % interval (p99 and throughput; ^: no upper bound)"))
    if few_p99:
        handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="white", markeredgecolor="grey",
                              label=f"p99 from < {MIN_SAMPLES['p99']:,} requests (rough)"))
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13),
              ncol=min(3, max(1, len(handles))), frameon=False)

    names = [_cost_label(t) for t in targets]
    # only ranked series get a bar: a cost of an unverified or failing target is not a price-performance figure
    costs = [t.usd_per_million_inferences if t.rank is not None else None for t in targets]
    ypos = list(range(len(targets)))[::-1]
    known = [c for c in costs if c is not None]
    if targets:
        bars = bx.barh(ypos, [c or 0.0 for c in costs], height=0.5,
                       color=[colors[i % 10] for i in range(len(targets))])
        bx.set_yticks(ypos, names, fontsize=8)
        bx.set_ylim(-0.75, len(targets) - 0.25)
        for bar, t, c in zip(bars, targets, costs, strict=True):
            y = bar.get_y() + bar.get_height() / 2
            if c is not None:
                bx.annotate(f"${c:,.3f}", (c, y), xytext=(3, 0), textcoords="offset points", va="center",
                            fontsize=8)
            else:
                bx.annotate(t.unranked_reason or "n/a", (0, y), xytext=(3, 0), textcoords="offset points",
                            va="center", fontsize=8, color="dimgrey", style="italic")
        bx.set_xlim(0, (max(known) if known else 1.0) * 1.45)
        if not known:
            bx.set_xticks([])
    else:
        bx.text(0.5, 0.5, "no targets", ha="center", va="center", transform=bx.transAxes)
        bx.set_xticks([])
        bx.set_yticks([])
    bx.set_xlabel("USD per 1M inferences at the best SLO-meeting rate")
    bx.set_title("Price-performance (lower is better)", fontsize=10)
    fig.suptitle(title)
    return fig


def _interval_bars(ax: Any, pts: Sequence[Any], x: Sequence[float], p99: Sequence[float], color: str) -> None:
    """95 % bars: p99 up and down, throughput left and right; an open upper bound (too few samples) is a caret."""
    def lo(v: float, b: float | None) -> float:
        return max(0.0, v - b) if b is not None else 0.0

    def hi(v: float, b: float | None) -> float:
        return max(0.0, b - v) if b is not None else 0.0

    lats = [p.summary["latency_ms"] for p in pts]
    yerr = [[lo(v, la.get("p99_lo")) for v, la in zip(p99, lats, strict=True)],
            [hi(v, la.get("p99_hi")) for v, la in zip(p99, lats, strict=True)]]
    xerr = [[lo(v, p.summary.get("inferences_per_s_lo")) for v, p in zip(x, pts, strict=True)],
            [hi(v, p.summary.get("inferences_per_s_hi")) for v, p in zip(x, pts, strict=True)]]
    ax.errorbar(x, p99, yerr=yerr, xerr=xerr, fmt="none", ecolor=color, alpha=0.55, capsize=2.5, lw=1)
    open_hi = [(v, y) for v, y, la in zip(x, p99, lats, strict=True) if "p99_hi" in la and la["p99_hi"] is None]
    if open_hi:
        ax.scatter([v for v, _ in open_hi], [y * 1.25 for _, y in open_hi], marker="^", s=18, color=color,
                   alpha=0.7, zorder=4)


def render_png(targets: Sequence[TargetReport], *, slo_p99_ms: float, title: str,
               slo_percentile: str = "p99") -> bytes:
    fig = build_figure(targets, slo_p99_ms=slo_p99_ms, title=title, slo_percentile=slo_percentile)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# -- text helpers ------------------------------------------------------------------------------------

def _fmt(v: Any, spec: str = ",.1f", na: str = "n/a") -> str:
    if v is None:
        return na
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | float):
        return format(v, spec)
    return str(v)


def _pct(s: Mapping[str, Any], key: str) -> str:
    """A percentile in ms, with the few-samples mark where the rule says so."""
    text = _fmt(s["latency_ms"][key], ",.2f")
    return text + FEW if key in s.get("few_samples", ()) else text


def _load(s: Mapping[str, Any]) -> str:
    if s["mode"] == "open":
        return f"{s['requested_rate']:g}/s" + (" poisson" if s["arrival"] == "poisson" else "")
    paced = f" @{s['requested_rate']:g}/s" if s.get("requested_rate") else ""
    return f"c={s['concurrency']}{paced}"


# -- HTML --------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:22px} h2{font-size:17px;margin-top:1.6em}
.wrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ccc;padding:3px 6px;font-size:12.5px;text-align:right;vertical-align:top}
th{background:#f3f3f3} td.l,th.l{text-align:left}
td.few{color:#8a5a00;background:#fff8e6}
td.ok{color:#14622b} td.bad{color:#a40000;background:#fff0f0;overflow-wrap:anywhere;max-width:28em}
td.wrap-text{text-align:left;overflow-wrap:anywhere;max-width:28em}
img{max-width:100%;height:auto}
.note{color:#555;font-size:12px;max-width:80em}
.warn li{margin:.2em 0;overflow-wrap:anywhere}
details{border:1px solid #ddd;border-radius:4px;margin:.4em 0;padding:.3em .6em}
summary{cursor:pointer;overflow-wrap:anywhere}
table.kv td{text-align:left;font-size:12px} table.kv td:first-child{color:#555;white-space:nowrap}
table.kv td:last-child{overflow-wrap:anywhere;max-width:70em}
pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:11.5px;margin:0}
"""


def _td(text: Any, cls: str = "", title: str = "") -> str:
    attrs = (f' class="{cls}"' if cls else "") + (f' title="{html.escape(title)}"' if title else "")
    return f"<td{attrs}>{html.escape(str(text))}</td>"


def _pct_td(s: Mapping[str, Any], key: str) -> str:
    if key in s.get("few_samples", ()):
        return _td(_pct(s, key), "few", f"from {s['ok']:,} successful requests; {PERCENTILE_LABELS[key]} needs "
                                        f"at least {MIN_SAMPLES[key]:,}")
    return _td(_pct(s, key))


_SERVER_KEYS = ("model", "revision", "processor", "backend", "dtype", "max_batch_size", "batch_wait_timeout_s",
                "num_threads", "max_seq_length")


def _server_summary(info: Mapping[str, Any] | None, error: str | None) -> str:
    if not info:
        return error or "none"
    parts = [f"{k.replace('_', ' ')} {info[k]}" for k in _SERVER_KEYS if info.get(k) not in (None, "")]
    versions = info.get("versions")
    if isinstance(versions, Mapping):
        parts += [f"{k} {v}" for k, v in list(versions.items())[:4]]
    return " · ".join(str(p) for p in parts) or "see details"


def _input_block(i: Mapping[str, Any]) -> str:
    prov = i.get("provenance") or {}
    client = i.get("client") or {}
    info, info_error = i.get("server_info"), i.get("server_info_error")
    who = f"client {client.get('index', '?')} of {client.get('count', '?')}"
    head = (f"{i.get('target')} · run {i.get('run_id')} · {who} — {i.get('status')} — "
            f"{i.get('started_at') or '?'} → {i.get('ended_at') or '?'}")
    sha = prov.get("git_sha") or "unknown"
    argv = prov.get("argv")
    rows: list[tuple[str, str]] = [
        ("file", str(i.get("source"))),
        ("error", str(i.get("error"))) if i.get("error") else ("", ""),
        ("target URL", str(prov.get("url") or "?")),
        ("tool", f"eks-inference {prov.get('tool_version') or '?'}, git {sha}"),
        ("host", " · ".join(str(x) for x in (prov.get("host"), prov.get("pod"), prov.get("platform"),
                                             f"{prov.get('cpu_count')} CPUs" if prov.get("cpu_count") else None)
                            if x)),
        ("command", shlex.join(str(a) for a in argv) if isinstance(argv, list) else str(argv or "?")),
        ("waited for target", f"{prov['waited_for_target_s']:.1f} s" if prov.get("waited_for_target_s") is not None
         else ""),
        ("clients met", _barrier_text(prov.get("barrier"))),
        ("server", _server_summary(info, info_error)),
        ("verification", _verification_text(i.get("verification"))),
        *(("note", str(n)) for n in i.get("notes") or ()),
    ]
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows if k and v)
    raw = ("<details><summary>server /info (raw)</summary><pre>"
           f"{html.escape(json.dumps(info, indent=1, sort_keys=True))}</pre></details>") if info else ""
    return (f"<details><summary>{html.escape(head)}</summary><table class=\"kv\">{body}</table>{raw}</details>")


def _verification_text(v: Any) -> str:
    if not isinstance(v, Mapping):
        return "not checked (run without --verify)"
    return str(v.get("summary") or v.get("reason") or v.get("status"))


def _barrier_text(barrier: Any) -> str:
    if not isinstance(barrier, Mapping):
        return ""
    ready = barrier.get("ready_at") or {}
    return f"started together at {barrier.get('start_at')} ({len(ready)} clients ready)"


def _verified_cls(r: Mapping[str, Any]) -> str:
    v = str(r.get("verified") or "")
    return "l ok" if v == "yes" else "l bad" if v.startswith("FAILED") else "l"


def render_html(doc: Mapping[str, Any], png: bytes, *, title: str, timeline_png: bytes = b"") -> str:
    e = html.escape
    rows = []
    for r in doc["targets"]:
        t, best = r["target"], r["best"]
        rank = _fmt(r["rank"], "d", "–")
        rows.append(
            "<tr>" + _td(rank) + _td(r["label"], "l") + _td(r.get("verified") or "not checked", _verified_cls(r))
            + _td(t.get("processor") or "?", "l")
            + _td(TargetInfo.from_dict(t).instances_label, "l")
            + _td(r["region"] + (" (assumed)" if r["region_assumed"] else ""), "l")
            + _td(_fmt(best["inferences_per_s"] if best else None))
            + (_pct_td(best, "p99") if best else _td("n/a"))
            + _td(_fmt(r["hourly_usd"], ",.4f")) + _td(cost_split_text(r.get("cost_split")), "l")
            + _td(_fmt(r["usd_per_million_inferences"], ",.4f"))
            + _td(r["unranked_reason"] or "", "l") + "</tr>"
        )
    steps = []
    for r in doc["targets"]:
        for s in r["steps"]:
            steps.append(
                "<tr>" + _td(r["label"], "l") + _td(_load(s), "l") + _td(s["clients"]) + _td(f"{s['requests']:,}")
                + _td(f"{s['errors']:,}") + _td(_fmt(s["throughput_rps"])) + _td(_fmt(s["inferences_per_s"]))
                + "".join(_pct_td(s, k) for k in ("p50", "p90", "p99", "p999"))
                + _td(_fmt(s["latency_ms"]["max"], ",.2f")) + _td("yes" if s["behind_schedule"] else "")
                + _td(contention_note(s), "wrap-text")
                + _td(("✔ " if s["slo_met"] else "✘ ") + s["slo_reason"], "wrap-text") + "</tr>"
            )
    server = []
    for r in doc["targets"]:
        for s in r["steps"]:
            cells = _server_cells(s)
            server.append("<tr>" + _td(r["label"], "l") + _td(_load(s), "l") + _td(f"{s['ok']:,}")
                          + "".join(_td(c) for c in cells[:-1]) + _td(cells[-1], "wrap-text") + "</tr>")
    inputs = "".join(_input_block(i) for i in doc["inputs"]) or "<p>none</p>"
    warnings = "".join(f"<li>{e(w)}</li>" for w in doc["warnings"]) or "<li>none</li>"
    img = base64.b64encode(png).decode("ascii")
    prices = doc["prices"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{e(title)}</h1>
<p class="note">Generated {e(doc['generated_at'])} by eks-inference {e(doc['tool_version'])}.
SLO: {e(_slo_pct(doc))} &le;
{doc['slo_p99_ms']:g} ms and errors &le; {doc['max_error_rate']:.2%}; a step where the client fell behind its
schedule never counts. Each run of a target is its own series. Percentiles come from HDR histograms merged exactly
across clients. Only a series whose answers passed verification against an fp32 reference of its weights
(<code>loadtest run --verify</code>) is ranked: a fast wrong answer is not a price-performance figure.</p>
<h2>Ranking (USD per 1M inferences at the best SLO-meeting step)</h2>
<div class="wrap"><table id="ranking"><tr><th>rank</th><th class="l">series</th><th class="l">verified</th>
<th class="l">processor</th>
<th class="l">instances</th><th class="l">region</th><th>best inf/s</th><th>p99 ms there</th>
<th>USD/hour ({e(_kind_label(prices))})</th><th class="l">cost split (USD/hour)</th>
<th>USD per 1M inf ({e(_kind_label(prices))})</th><th class="l">not ranked because</th></tr>
{''.join(rows)}</table></div>
<p class="note">Prices: {e(_kind_label(prices))}, {e(prices['source'])}, dated {e(prices['date'])}. {e(prices['note'])}
A cost "priced as" a type was measured on another machine and priced at that type's hourly rate. An in-cluster
target's cost counts every pod it runs at its share of its node (the larger of its CPU and memory requests over
the node's allocatable), workers, head and sidecars, wherever they run; the cost split shows each part.</p>
<img id="plot" alt="latency percentiles vs throughput per series, and USD per 1M inferences"
 src="data:image/png;base64,{img}">
{_capacity_html(doc)}
{_intervals_html(doc)}
<h2>Steps</h2>
<div class="wrap"><table id="steps"><tr><th class="l">series</th><th class="l">load</th><th>clients</th>
<th>requests</th><th>errors</th><th>req/s</th><th>inf/s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th>
<th>p99.9 ms</th><th>max ms</th><th>client behind</th><th class="l">host</th><th class="l">SLO</th></tr>
{''.join(steps)}</table></div>
<p class="note">{e(doc.get('percentile_rule', PERCENTILE_RULE))}</p>
<h2>Where the time goes (client latency and the server's split of it)</h2>
<div class="wrap"><table id="server"><tr><th class="l">series</th><th class="l">load</th><th>ok</th>
<th>client mean ms</th><th>network + proxy ms</th><th>queue ms</th><th>model ms</th><th>served</th>
<th>mean batch</th><th>padding</th><th>replicas</th><th class="l">server notes</th></tr>
{''.join(server)}</table></div>
<p class="note">{e(SERVER_RULE)}</p>
{_timeline_html(doc.get("timeline") or {}, timeline_png)}
{tuned_html(doc.get("tuned"))}<h2>Warnings</h2><ul class="warn">{warnings}</ul>
<h2>Inputs and provenance</h2>
{inputs}
</body></html>
"""


# -- console -----------------------------------------------------------------------------------------

CAPACITY_RULE = (
    "Capacity at the SLO: the highest offered rate whose latency percentile meets the SLO (errors within their "
    "bound). Each step is judged on the 95 % interval of that percentile: pass when all of it lies under the SLO, "
    "fail when all of it lies above; the interval runs from the highest rate that passed to the lowest that "
    "failed, and the estimate is the highest rate whose measured percentile meets the SLO. Steps that were "
    "unsure, contended or behind schedule never narrow it. Per replica and per node divide by the serving "
    "replicas recorded on the steps and the nodes that served the target."
)


def _rate(v: Any) -> str:
    return "open" if v is None else f"{v:,.4g}"


def capacity_cells(c: Mapping[str, Any]) -> list[str]:
    """SLO, estimate, interval, width, per replica, per node, notes: one row of the capacity table."""
    width = c.get("relative_width")
    reps = c.get("replicas")
    per_rep = ("n/a" if c.get("per_replica_rps") is None else
               f"{c['per_replica_rps']:,.4g} [{_rate(c.get('per_replica_rps_lo'))}, "
               f"{_rate(c.get('per_replica_rps_hi'))}] on {reps}")
    per_node = ("n/a" if c.get("per_node_rps") is None else
                f"{c['per_node_rps']:,.4g} [{_rate(c.get('per_node_rps_lo'))}, {_rate(c.get('per_node_rps_hi'))}]")
    return [f"{c['percentile']} <= {c['slo_ms']:g} ms", _rate(c.get("rps")) if c.get("rps") is not None else "none",
            f"[{_rate(c.get('rps_lo'))}, {_rate(c.get('rps_hi'))}]",
            "n/a" if width is None else f"{width:.0%}", per_rep, per_node, "; ".join(c.get("notes") or [])]


def capacity_table(targets: Sequence[TargetReport]) -> Table:
    table = Table(title="Capacity at the SLO (req/s offered; 95 % interval)")
    for col in ("series", "SLO", "capacity", "95 % interval", "width", "per replica", "per node", "notes"):
        table.add_column(col, justify="left" if col in ("series", "SLO", "notes") else "right")
    for t in targets:
        if t.capacity:
            table.add_row(t.label, *capacity_cells(t.capacity))
    return table


def _capacity_html(doc: Mapping[str, Any]) -> str:
    rows = "".join("<tr>" + _td(c["label"], "l") + "".join(_td(x, "l" if i in (0, 6) else "")
                                                          for i, x in enumerate(capacity_cells(c))) + "</tr>"
                   for c in doc.get("capacity") or [])
    if not rows:
        return ""
    return ("<h2>Capacity at the SLO (the figure to buy nodes from)</h2><div class=\"wrap\"><table id=\"capacity\">"
            "<tr><th class=\"l\">series</th><th class=\"l\">SLO</th><th>capacity req/s</th><th>95 % interval</th>"
            "<th>width</th><th>per replica</th><th>per node</th><th class=\"l\">notes</th></tr>"
            f"{rows}</table></div><p class=\"note\">{html.escape(doc.get('capacity_rule', CAPACITY_RULE))}</p>")


def interval_text(v: Any, lo: Any, hi: Any, spec: str = ",.2f") -> str:
    """``45.20 [41.00, 52.10]``; an open bound reads ``open``."""
    if v is None:
        return "n/a"
    return f"{format(v, spec)} [{_fmt(lo, spec, 'open')}, {_fmt(hi, spec, 'open')}]"


_ci = interval_text


def _intervals_html(doc: Mapping[str, Any]) -> str:
    rows = []
    for r in doc["targets"]:
        for s in r["steps"]:
            lat = s["latency_ms"]
            flags = [x for x in (("unstable: " + str(s.get("unstable_reason"))) if s.get("unstable") else "",
                                 "contended" if s.get("contended") else "") if x]
            rows.append("<tr>" + _td(r["label"], "l") + _td(_load(s), "l") + _td(s.get("repeats", 1))
                        + _td(_ci(s["throughput_rps"], s.get("throughput_rps_lo"), s.get("throughput_rps_hi"), ",.1f"))
                        + "".join(_td(_ci(lat[k], lat.get(f"{k}_lo"), lat.get(f"{k}_hi"))) for k in ("p50", "p90",
                                                                                                    "p99"))
                        + _td(_ci(s["error_rate"] * 100, _pct100(s.get("error_rate_lo")),
                                  _pct100(s.get("error_rate_hi")), ".2f"))
                        + _td(s.get("slo_confidence") or "", "l") + _td("; ".join(flags), "wrap-text") + "</tr>")
    if not rows:
        return ""
    return ("<h2>Steps with 95 % intervals (in order of offered rate)</h2><div class=\"wrap\">"
            "<table id=\"intervals\"><tr><th class=\"l\">series</th><th class=\"l\">offered</th><th>repeats</th>"
            "<th>req/s achieved</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>errors %</th>"
            "<th class=\"l\">SLO, with confidence</th><th class=\"l\">flags</th></tr>"
            f"{''.join(rows)}</table></div>")


def _slo_pct(doc: Mapping[str, Any]) -> str:
    return str(doc.get("slo_percentile", "p99"))


def _pct100(v: Any) -> float | None:
    return None if v is None else v * 100


def ranking_table(targets: Sequence[TargetReport], *, slo_p99_ms: float, prices: PriceTable) -> Table:
    pct = next((str(t.capacity["percentile"]) for t in targets if t.capacity), "p99")
    table = Table(title=f"Price-performance at {pct} <= {slo_p99_ms:g} ms ({prices.label})")
    for col in ("rank", "series", "verified", "processor", "instances", "best inf/s", "p99 ms", "USD/hour",
                "cost split", "USD/1M inf", "not ranked because"):
        table.add_column(col, justify="left" if col in ("series", "verified", "processor", "instances",
                                                        "cost split", "not ranked because") else "right")
    for t in targets:
        b = t.best.summary if t.best else None
        table.add_row(
            _fmt(t.rank, "d", "–"), t.label, t.verified, t.target.processor or "?", t.target.instances_label,
            _fmt(b["inferences_per_s"] if b else None), _pct(b, "p99") if b else "n/a",
            _fmt(t.hourly_usd, ",.4f"), cost_split_text(t.cost_split), _fmt(t.usd_per_million_inferences, ",.4f"),
            t.unranked_reason or "",
        )
    return table


def steps_table(summaries: Sequence[Mapping[str, Any]], *, title: str = "Steps") -> Table:
    """One row per step; latencies in ms. Compact enough for an 80-column terminal with one series."""
    series = [str(s.get("series") or s["target"]) for s in summaries]
    with_series = len(set(series)) > 1
    table = Table(title=f"{title} (latency in ms; {FEW} = fewer samples than the percentile needs)")
    cols = (["series"] if with_series else []) + ["load", "req", "err", "req/s", "p50", "p90", "p99", "p99.9",
                                                  "max", "lag p99", "note"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("series", "load", "note") else "right",
                         no_wrap=col != "note")
    for name, s in zip(series, summaries, strict=True):
        lat = s["latency_ms"]
        notes = []
        if s["behind_schedule"]:
            notes.append("client behind schedule")
        if s["client_saturated"]:
            notes.append("client CPU saturated")
        if contention_note(s):
            notes.append(contention_note(s))
        if s["errors"]:
            notes.append(", ".join(f"{k}={v}" for k, v in s["errors_by_kind"].items()))
        if "slo_reason" in s:
            notes.append(("✔ " if s["slo_met"] else "✘ ") + s["slo_reason"])
        models = s.get("models")
        if models:
            cold, warm = models["cold_ms"]["p99"], models["warm_ms"]["p99"]
            notes.append(f"models: hit ratio {models['hit_ratio']:.1%}, {models['load_rate_per_s']:.2f} loads/s, "
                         f"cold p99 {_fmt(cold, ',.1f')} ms ({models['cold']:,}), warm p99 {_fmt(warm, ',.1f')} ms")
        srv = _server_cells(s)
        if (s.get("server") or {}).get("status") in ("ok", "partial"):
            notes.append(f"server: net+proxy {srv[1]} / queue {srv[2]} / model {srv[3]} ms, batch {srv[5]}")
        elif s.get("server", {}).get("status") not in (None, "not recorded"):
            notes.append(srv[-1])
        cells = [_load(s), _fmt(s["requests"], ",d"), _fmt(s["errors"], ",d"), _fmt(s["throughput_rps"]),
                 _pct(s, "p50"), _pct(s, "p90"), _pct(s, "p99"), _pct(s, "p999"), _fmt(lat["max"], ",.2f"),
                 _fmt(s["schedule_lag_ms"]["p99"], ",.2f"), "; ".join(notes)]
        table.add_row(*([name] if with_series else []), *cells)
    return table


def write_report(
    out_dir: Path, doc: Mapping[str, Any], targets: Sequence[TargetReport], *, slo_p99_ms: float, title: str
) -> dict[str, Path]:
    """Write report.json, report.csv, report.png and report.html into ``out_dir`` (and, when the runs sampled
    replicas or followed a schedule, timeline.csv and timeline.png); returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / f"report.{k}" for k in ("json", "csv", "png", "html")}
    paths["json"].write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    write_csv(paths["csv"], targets)
    png = render_png(targets, slo_p99_ms=slo_p99_ms, title=title, slo_percentile=str(doc.get("slo_percentile", "p99")))
    paths["png"].write_bytes(png)
    timeline_png = b""
    if doc.get("timeline"):
        paths["timeline_csv"] = out_dir / "timeline.csv"
        write_timeline_csv(paths["timeline_csv"], doc["timeline"])
        timeline_png = render_timeline_png(doc["timeline"], title=title)
        paths["timeline_png"] = out_dir / "timeline.png"
        paths["timeline_png"].write_bytes(timeline_png)
    paths["html"].write_text(render_html(doc, png, title=title, timeline_png=timeline_png), encoding="utf-8")
    return paths


# -- timeline (replicas, throughput and latency per second) -------------------------------------------------------

def write_timeline_csv(path: Path, timeline: Mapping[str, Mapping[str, Any]]) -> None:
    from eks_inference.analysis.timeline import TIMELINE_COLUMNS

    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=TIMELINE_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for entry in timeline.values():
            for row in entry["seconds"]:
                w.writerow({k: ("" if v is None else v) for k, v in row.items()})


def build_timeline_figure(timeline: Mapping[str, Mapping[str, Any]], *, title: str) -> Figure:
    """Per series, three rows over the run's seconds: offered and achieved requests/s, mean and worst latency,
    and the replicas the target reported."""
    from matplotlib.figure import Figure

    n = max(1, len(timeline))
    fig = Figure(figsize=(13, 2.6 * 3 * n / 1.6), dpi=110, layout="constrained")
    axes = fig.subplots(3 * n, 1, sharex=False, squeeze=False)[:, 0]
    for k, (label, entry) in enumerate(timeline.items()):
        rows = entry["seconds"]
        x = [r["second"] for r in rows]
        rate_ax, lat_ax, rep_ax = axes[3 * k: 3 * k + 3]
        rate_ax.plot(x, [r["offered_rps"] for r in rows], "--", color="grey", label="offered req/s")
        rate_ax.plot(x, [r["ok"] for r in rows], color="C0", label="answered req/s")
        rate_ax.plot(x, [r["errors"] for r in rows], color="C3", label="errors/s")
        rate_ax.set_ylabel("req/s")
        rate_ax.set_title(label, fontsize=10)
        rate_ax.legend(fontsize=7, loc="upper left")
        lat_ax.plot(x, [r["mean_ms"] for r in rows], color="C1", label="mean ms")
        lat_ax.plot(x, [r["max_ms"] for r in rows], color="C1", alpha=0.4, label="max ms")
        lat_ax.set_ylabel("latency ms")
        lat_ax.legend(fontsize=7, loc="upper left")
        sampled = [(r["second"], r["replicas_running"]) for r in rows if r["replicas_running"] is not None]
        rep_ax.step([a for a, _ in sampled], [b for _, b in sampled], where="post", color="C2",
                    label="replicas running")
        targets = [(r["second"], r["replicas_target"]) for r in rows if r["replicas_target"] is not None]
        rep_ax.step([a for a, _ in targets], [b for _, b in targets], where="post", color="C2", ls=":",
                    label="replicas wanted")
        rep_ax.set_ylabel("replicas")
        rep_ax.set_xlabel("seconds since the step began")
        rep_ax.set_xlim(rate_ax.get_xlim())
        if sampled:
            rep_ax.set_ylim(0, max(b for _, b in sampled + targets) + 1)
            rep_ax.legend(fontsize=7, loc="upper left")
        else:
            rep_ax.text(0.5, 0.5, "the target reported no replica counts", transform=rep_ax.transAxes,
                        ha="center", va="center", color="dimgrey", style="italic")
        for ax in (rate_ax, lat_ax, rep_ax):
            ax.grid(True, alpha=0.3)
    fig.suptitle(f"{title}: per second")
    return fig


def render_timeline_png(timeline: Mapping[str, Mapping[str, Any]], *, title: str) -> bytes:
    fig = build_timeline_figure(timeline, title=title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _timeline_html(timeline: Mapping[str, Mapping[str, Any]], png: bytes) -> str:
    if not timeline:
        return ""
    parts = ["<h2>Per second: load, latency and replicas</h2>",
             '<p class="note">Each second of each run that followed a schedule or sampled the target\'s '
             "<code>/info</code>: requests offered and answered, mean and worst latency of the requests that "
             "completed in it (merged across clients), and the Serve replicas the target reported running and "
             "wanted. timeline.csv holds the same rows.</p>"]
    if png:
        img = base64.b64encode(png).decode("ascii")
        parts.append(f'<img id="timeline" alt="per-second load, latency and replicas" src="data:image/png;base64,'
                     f'{img}">')
    for label, entry in timeline.items():
        if entry.get("segments"):
            rows = "".join(
                "<tr>" + _td(r["load"], "l") + _td(f"{r['requests']:,}") + _td(f"{r['errors']:,}")
                + _td(_fmt(r["throughput_rps"])) + _td(_fmt(r["p50_ms"], ",.2f")) + _td(_fmt(r["p99_ms"], ",.2f"))
                + _td(_fmt(r["max_ms"], ",.2f")) + "</tr>" for r in entry["segments"])
            parts.append(f"<h3>{html.escape(label)}: per segment</h3><div class=\"wrap\"><table class=\"segments\">"
                         "<tr><th class=\"l\">segment</th><th>requests</th><th>errors</th><th>req/s</th>"
                         f"<th>p50 ms</th><th>p99 ms</th><th>max ms</th></tr>{rows}</table></div>")
        secs = "".join(
            "<tr>" + _td(r["second"]) + _td(_fmt(r["offered_rps"])) + _td(f"{r['ok']:,}") + _td(f"{r['errors']:,}")
            + _td(_fmt(r["mean_ms"], ",.1f", "")) + _td(_fmt(r["max_ms"], ",.1f", ""))
            + _td("" if r["replicas_running"] is None else r["replicas_running"])
            + _td("" if r["replicas_target"] is None else r["replicas_target"]) + "</tr>" for r in entry["seconds"])
        parts.append(f"<details><summary>{html.escape(label)}: every second</summary><div class=\"wrap\">"
                     "<table class=\"timeline\"><tr><th>s</th><th>offered/s</th><th>ok</th><th>errors</th>"
                     "<th>mean ms</th><th>max ms</th><th>replicas</th><th>wanted</th></tr>"
                     f"{secs}</table></div></details>")
    return "\n".join(parts)


def print_report(console: Console, targets: Sequence[TargetReport], *, slo_p99_ms: float, prices: PriceTable,
                 warnings: Sequence[str], tuned: Mapping[str, Any] | None = None) -> None:
    rows = [{**p.summary, "series": t.label, "slo_met": p.slo_met, "slo_reason": p.slo_reason}
            for t in targets for p in t.points]
    console.print(steps_table(rows, title="Steps (merged across clients)"))
    console.print(ranking_table(targets, slo_p99_ms=slo_p99_ms, prices=prices))
    if any(t.capacity for t in targets):
        console.print(capacity_table(targets))
    if tuned:
        for line in tuned_lines(tuned):
            console.print(line, highlight=False, markup=False)
    for w in warnings:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)

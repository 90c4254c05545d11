"""Writers for the price-performance report: JSON, CSV, PNG, a self-contained HTML page, console tables.

The numbers come from :mod:`aggregate`; this module only lays them out, so every format shows the same
figures. The HTML embeds the PNG (base64) and carries no external references: it can be attached to a
ticket or opened from S3 as a single file.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from eks_inference import __version__
from eks_inference.loadtest.aggregate import TargetReport
from eks_inference.loadtest.prices import PriceTable

REPORT_FORMAT = "eks-inference.loadtest.report"
REPORT_FORMAT_VERSION = 1
CSV_COLUMNS = (
    "target", "processor", "instance_type", "nodes", "region", "run_id", "step", "mode", "arrival",
    "requested_rate", "concurrency", "clients", "requests", "ok", "errors", "error_rate", "throughput_rps",
    "inferences_per_s", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "behind_schedule",
    "client_saturated", "slo_met", "slo_reason", "price_per_instance_hour", "hourly_usd",
    "usd_per_million_inferences_at_step",
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
        "prices": {"date": prices.date, "source": prices.source, "note": prices.note},
        "ranking": [
            {"rank": t.rank, "target": t.target.name, "usd_per_million_inferences": t.usd_per_million_inferences,
             "best_inferences_per_s": t.best.summary["inferences_per_s"] if t.best else None,
             "hourly_usd": t.hourly_usd}
            for t in targets
        ],
        "targets": [t.to_dict() for t in targets],
        "warnings": list(warnings),
        "inputs": list(inputs),
    }


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
                "target": t.target.name, "processor": t.target.processor, "instance_type": t.target.instance_type,
                "nodes": t.target.nodes, "region": t.region, "run_id": s["run_id"], "step": s["step"],
                "mode": s["mode"], "arrival": s["arrival"], "requested_rate": s["requested_rate"],
                "concurrency": s["concurrency"], "clients": s["clients"], "requests": s["requests"], "ok": s["ok"],
                "errors": s["errors"], "error_rate": s["error_rate"], "throughput_rps": s["throughput_rps"],
                "inferences_per_s": s["inferences_per_s"], "p50_ms": lat["p50"], "p90_ms": lat["p90"],
                "p95_ms": lat["p95"], "p99_ms": lat["p99"], "p999_ms": lat["p999"], "max_ms": lat["max"],
                "behind_schedule": s["behind_schedule"], "client_saturated": s["client_saturated"],
                "slo_met": p.slo_met, "slo_reason": p.slo_reason,
                "price_per_instance_hour": t.price_per_instance_hour, "hourly_usd": t.hourly_usd,
                "usd_per_million_inferences_at_step": _cost_at(t, s["inferences_per_s"]),
            })
    return rows


def write_csv(path: Path, targets: Sequence[TargetReport]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for row in csv_rows(targets):
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})


def render_png(targets: Sequence[TargetReport], *, slo_p99_ms: float, title: str) -> bytes:
    """Latency percentiles vs throughput (one curve per target, p99 solid, p50 dashed) and $ per 1M."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(13, 5.2), dpi=110, layout="constrained")
    ax, bx = fig.subplots(1, 2, width_ratios=[3, 2])
    colors = [f"C{i}" for i in range(10)]
    for i, t in enumerate(targets):
        color = colors[i % len(colors)]
        for mode in ("open", "closed"):
            pts = [p for p in t.points if p.summary["mode"] == mode and p.summary["ok"] > 0]
            if not pts:
                continue
            # In order of offered load: past saturation the curve bends back, which is the point.
            pts.sort(key=lambda p: (p.summary["run_id"], p.summary["requested_rate"] or 0,
                                    p.summary["concurrency"] or 0))
            x = [p.summary["inferences_per_s"] for p in pts]
            label = t.target.name + (" (closed loop)" if mode == "closed" else "")
            ls = "-" if mode == "open" else ":"
            ax.plot(x, [p.summary["latency_ms"]["p99"] for p in pts], ls, marker="o", color=color,
                    label=f"{label} p99")
            ax.plot(x, [p.summary["latency_ms"]["p50"] for p in pts], "--", marker=".", color=color, alpha=0.6,
                    label=f"{label} p50")
            bad = [p for p in pts if p.summary["behind_schedule"]]
            if bad:
                ax.scatter([p.summary["inferences_per_s"] for p in bad],
                           [p.summary["latency_ms"]["p99"] for p in bad], marker="x", s=80, color="black",
                           zorder=5)
        if t.best is not None:
            ax.scatter([t.best.summary["inferences_per_s"]], [t.best.summary["latency_ms"]["p99"]], marker="*",
                       s=220, color=color, edgecolor="black", zorder=6)
    ax.axhline(slo_p99_ms, color="red", lw=1, ls="-.", label=f"SLO p99 {slo_p99_ms:g} ms")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}" if str(v)[0] in "235" else ""))
    ax.set_xlabel("throughput (successful inferences/s)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title("Latency vs throughput (★ best step within SLO, × client behind)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    priced = [t for t in targets if t.usd_per_million_inferences is not None]
    if priced:
        names = [t.target.name for t in priced]
        costs = [t.usd_per_million_inferences or 0.0 for t in priced]
        bars = bx.barh(names[::-1], costs[::-1], color=[colors[targets.index(t) % 10] for t in priced][::-1])
        bx.bar_label(bars, labels=[f"${c:,.3f}" for c in costs[::-1]], fontsize=8, padding=2)
        bx.set_xlabel("USD per 1M inferences at the best SLO-meeting rate")
        bx.margins(x=0.3)
    else:
        unpriced = [t.target.name for t in targets if t.best is not None]
        why = (f"no price for {', '.join(unpriced)}:\nname an EC2 --instance-type, or give --prices"
               if unpriced else "no target met the SLO")
        bx.text(0.5, 0.5, why, ha="center", va="center", transform=bx.transAxes)
        bx.set_xticks([])
        bx.set_yticks([])
    bx.set_title("Price-performance (lower is better)")
    fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _fmt(v: Any, spec: str = ",.1f", na: str = "n/a") -> str:
    if v is None:
        return na
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | float):
        return format(v, spec)
    return str(v)


def _load(s: Mapping[str, Any]) -> str:
    if s["mode"] == "open":
        return f"{s['requested_rate']:g}/s" + (" poisson" if s["arrival"] == "poisson" else "")
    paced = f" @{s['requested_rate']:g}/s" if s.get("requested_rate") else ""
    return f"c={s['concurrency']}{paced}"


def render_html(doc: Mapping[str, Any], png: bytes, *, title: str) -> str:
    e = html.escape
    rows = []
    for r in doc["targets"]:
        t = r["target"]
        best = r["best"]
        rows.append(
            "<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in (
                _fmt(r["rank"], "d", "–"), t["name"], t.get("processor") or "?",
                f"{t.get('instance_type') or '?'} × {t['nodes']}", r["region"] + (" (assumed)" if r["region_assumed"]
                                                                               else ""),
                _fmt(best["inferences_per_s"] if best else None),
                _fmt(best["latency_ms"]["p99"] if best else None, ",.2f"),
                _fmt(r["hourly_usd"], ",.4f"), _fmt(r["usd_per_million_inferences"], ",.4f"),
            )) + "</tr>"
        )
    steps = []
    for r in doc["targets"]:
        for s in r["steps"]:
            lat = s["latency_ms"]
            cells = (s["target"], s["run_id"], _load(s), s["clients"], s["requests"], s["errors"],
                     _fmt(s["throughput_rps"]), _fmt(s["inferences_per_s"]), _fmt(lat["p50"], ",.2f"),
                     _fmt(lat["p90"], ",.2f"), _fmt(lat["p99"], ",.2f"), _fmt(lat["p999"], ",.2f"),
                     _fmt(lat["max"], ",.2f"), "yes" if s["behind_schedule"] else "",
                     ("✔ " if s["slo_met"] else "✘ ") + s["slo_reason"])
            steps.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in cells) + "</tr>")
    inputs = []
    for i in doc["inputs"]:
        prov = i.get("provenance", {})
        info = i.get("server_info")
        inputs.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in (
            i["source"], i.get("target"), i.get("status"), i.get("started_at"), i.get("ended_at"),
            prov.get("tool_version"), prov.get("git_sha") or "unknown", prov.get("host"),
            json.dumps(info, sort_keys=True)[:300] if info else (i.get("server_info_error") or "none"),
        )) + "</tr>")
    warnings = "".join(f"<li>{e(w)}</li>" for w in doc["warnings"]) or "<li>none</li>"
    img = base64.b64encode(png).decode("ascii")
    prices = doc["prices"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}} th{{background:#f3f3f3}}
td:first-child,td:nth-child(2){{text-align:left}} img{{max-width:100%}} .note{{color:#666;font-size:12px}}
</style></head><body>
<h1>{e(title)}</h1>
<p>Generated {e(doc['generated_at'])} by eks-inference {e(doc['tool_version'])}. SLO: p99 &le; {doc['slo_p99_ms']:g} ms
and errors &le; {doc['max_error_rate']:.2%}; a step where the client fell behind its schedule never counts.
Percentiles come from HDR histograms merged exactly across clients.</p>
<h2>Ranking (USD per 1M inferences at the best SLO-meeting step)</h2>
<table><tr><th>rank</th><th>target</th><th>processor</th><th>instances</th><th>region</th><th>best inf/s</th>
<th>p99 ms there</th><th>USD/hour</th><th>USD per 1M inf</th></tr>
{''.join(rows)}</table>
<p class="note">Prices: {e(prices['source'])}, dated {e(prices['date'])}. {e(prices['note'])}</p>
<img alt="latency percentiles vs throughput per target" src="data:image/png;base64,{img}">
<h2>Steps</h2>
<table><tr><th>target</th><th>run</th><th>load</th><th>clients</th><th>requests</th><th>errors</th><th>req/s</th>
<th>inf/s</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>client behind</th><th>SLO</th></tr>
{''.join(steps)}</table>
<h2>Warnings</h2><ul>{warnings}</ul>
<h2>Inputs and provenance</h2>
<table><tr><th>file</th><th>target</th><th>status</th><th>start</th><th>end</th><th>tool</th><th>git</th><th>host</th>
<th>server /info</th></tr>
{''.join(inputs)}</table>
</body></html>
"""


def ranking_table(targets: Sequence[TargetReport], *, slo_p99_ms: float, prices: PriceTable) -> Table:
    table = Table(title=f"Price-performance at p99 <= {slo_p99_ms:g} ms (prices of {prices.date})")
    for col in ("rank", "target", "processor", "instances", "best inf/s", "p99 ms", "USD/hour", "USD/1M inf"):
        table.add_column(col, justify="left" if col in ("target", "processor", "instances") else "right")
    for t in targets:
        b = t.best.summary if t.best else None
        table.add_row(
            _fmt(t.rank, "d", "–"), t.target.name, t.target.processor or "?",
            f"{t.target.instance_type or '?'} × {t.target.nodes}",
            _fmt(b["inferences_per_s"] if b else None), _fmt(b["latency_ms"]["p99"] if b else None, ",.2f"),
            _fmt(t.hourly_usd, ",.4f"), _fmt(t.usd_per_million_inferences, ",.4f"),
        )
    return table


def steps_table(summaries: Sequence[Mapping[str, Any]], *, title: str = "Steps") -> Table:
    """One row per step; latencies in ms. Compact enough for an 80-column terminal with one target."""
    with_target = len({s["target"] for s in summaries}) > 1
    table = Table(title=f"{title} (latency in ms)")
    cols = (["target"] if with_target else []) + ["load", "req", "err", "req/s", "p50", "p90", "p99", "p99.9",
                                                  "max", "lag p99", "note"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("target", "load", "note") else "right",
                         no_wrap=col != "note")
    for s in summaries:
        lat = s["latency_ms"]
        notes = []
        if s["behind_schedule"]:
            notes.append("client behind schedule")
        if s["client_saturated"]:
            notes.append("client CPU saturated")
        if s["errors"]:
            notes.append(", ".join(f"{k}={v}" for k, v in s["errors_by_kind"].items()))
        if "slo_reason" in s:
            notes.append(("✔ " if s["slo_met"] else "✘ ") + s["slo_reason"])
        cells = [_load(s), _fmt(s["requests"], ",d"), _fmt(s["errors"], ",d"),
                 _fmt(s["throughput_rps"]), _fmt(lat["p50"], ",.2f"), _fmt(lat["p90"], ",.2f"),
                 _fmt(lat["p99"], ",.2f"), _fmt(lat["p999"], ",.2f"), _fmt(lat["max"], ",.2f"),
                 _fmt(s["schedule_lag_ms"]["p99"], ",.2f"), "; ".join(notes)]
        table.add_row(*([s["target"]] if with_target else []), *cells)
    return table


def write_report(
    out_dir: Path, doc: Mapping[str, Any], targets: Sequence[TargetReport], *, slo_p99_ms: float, title: str
) -> dict[str, Path]:
    """Write report.json, report.csv, report.png and report.html into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / f"report.{k}" for k in ("json", "csv", "png", "html")}
    paths["json"].write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    write_csv(paths["csv"], targets)
    png = render_png(targets, slo_p99_ms=slo_p99_ms, title=title)
    paths["png"].write_bytes(png)
    paths["html"].write_text(render_html(doc, png, title=title), encoding="utf-8")
    return paths


def print_report(console: Console, targets: Sequence[TargetReport], *, slo_p99_ms: float, prices: PriceTable,
                 warnings: Sequence[str]) -> None:
    rows = [{**p.summary, "slo_met": p.slo_met, "slo_reason": p.slo_reason} for t in targets for p in t.points]
    console.print(steps_table(rows, title="Steps (merged across clients)"))
    console.print(ranking_table(targets, slo_p99_ms=slo_p99_ms, prices=prices))
    for w in warnings:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)

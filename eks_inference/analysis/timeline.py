"""Second-by-second view of a run: offered rate, throughput, latency and the replicas the target reported.

Built from what each client recorded (the per-second completion buckets of its step statistics and its replica
samples) and, for a report, merged across the clients of a run: counts and latency sums add, maxima take the
maximum, and each second's replica count is the largest any client saw in it (they sample the same service a
fraction of a second apart). Per-segment rows of a schedule come from the segments' own histograms, merged
exactly like a step's. Pure: no I/O, no clock.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.table import Table

from eks_inference.measure.schedule import RateSchedule, Segment
from eks_inference.measure.stats import SecondBucket, StepStats, latency_summary_ms, merge

TIMELINE_COLUMNS = ("series", "step", "second", "t", "offered_rps", "ok", "errors", "mean_ms", "max_ms",
                    "replicas_running", "replicas_target")


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    return dt.datetime.fromisoformat(iso).timestamp()


def merge_seconds(series: Iterable[Iterable[SecondBucket]]) -> dict[int, dict[str, int]]:
    """Per-second completion buckets of several clients, added up."""
    out: dict[int, dict[str, int]] = {}
    for buckets in series:
        for b in buckets:
            cur = out.setdefault(b.t, {"ok": 0, "errors": 0, "sum_us": 0, "max_us": 0})
            cur["ok"] += b.ok
            cur["errors"] += b.errors
            cur["sum_us"] += b.latency_sum_us
            cur["max_us"] = max(cur["max_us"], b.latency_max_us)
    return out


def merge_samples(samples: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, int | None]]:
    """Replica samples by epoch second: the largest running and target count seen in that second."""
    out: dict[int, dict[str, int | None]] = {}
    for s in samples:
        if s.get("running") is None:
            continue
        sec = math.floor(float(s["t"]))
        cur = out.setdefault(sec, {"running": None, "target": None})
        for key in ("running", "target"):
            v = s.get(key)
            if isinstance(v, int) and (cur[key] is None or v > (cur[key] or 0)):
                cur[key] = v
    return out


def rows(*, started_at: float, schedule: Sequence[Segment], seconds: Mapping[int, Mapping[str, int]],
         samples: Mapping[int, Mapping[str, int | None]], series: str = "", step: int = 0) -> list[dict[str, Any]]:
    """One row per second from the step's start to its last completion or sample; the replica count of a second
    without a sample is the last one seen (marked by ``replicas_running`` only where sampled)."""
    first = math.floor(started_at)
    keys = [*seconds, *samples]
    if not keys:
        return []
    last = max(keys)
    sched = RateSchedule(tuple(schedule)) if schedule else None
    out = []
    for sec in range(min(first, min(keys)), last + 1):
        b = seconds.get(sec, {})
        ok = int(b.get("ok", 0))
        sample = samples.get(sec, {})
        since = sec - started_at
        offered = None
        if sched is not None and 0 <= since + 0.5 < sched.total_s:
            offered = round(sched.rate_at(since + 0.5), 3)
        out.append({
            "series": series, "step": step, "second": sec - first, "t": sec, "offered_rps": offered, "ok": ok,
            "errors": int(b.get("errors", 0)),
            "mean_ms": round(b["sum_us"] / ok / 1000.0, 3) if ok else None,
            "max_ms": round(b["max_us"] / 1000.0, 3) if ok else None,
            "replicas_running": sample.get("running"), "replicas_target": sample.get("target"),
        })
    return out


def client_timeline(outcome: Any) -> list[dict[str, Any]]:
    """The per-second rows of one client's step (a runner ``StepOutcome``), before any merge."""
    return rows(started_at=outcome.started_at, schedule=outcome.spec.schedule,
                seconds=merge_seconds([outcome.stats.series]), samples=merge_samples(outcome.replicas),
                step=outcome.spec.index)


def segment_rows(segments: Iterable[tuple[int, Segment, StepStats | Sequence[StepStats]]],
                 series: str = "") -> list[dict[str, Any]]:
    """One row per schedule segment, its statistics merged across clients (histograms added, never averaged)."""
    out = []
    for i, seg, stats in segments:
        parts = [stats] if isinstance(stats, StepStats) else list(stats)
        hist = merge(st.latency_hist for st in parts)
        ok = sum(st.ok for st in parts)
        errors = sum(st.errors for st in parts)
        window = max((st.window_s for st in parts), default=0.0)
        mins = [st.min_us for st in parts if st.min_us is not None]
        maxs = [st.max_us for st in parts if st.max_us is not None]
        lat = latency_summary_ms(hist, min_us=min(mins) if mins else None, max_us=max(maxs) if maxs else None,
                                 sum_us=sum(st.sum_us for st in parts))
        out.append({"series": series, "segment": i, "load": seg.label, "requests": ok + errors, "ok": ok,
                    "errors": errors, "throughput_rps": round(ok / window, 3) if window else 0.0,
                    "p50_ms": lat["p50"], "p99_ms": lat["p99"], "max_ms": lat["max"]})
    return out


def from_results(parsed: Sequence[Any], label_of: Mapping[tuple[str, str], str] | None = None
                 ) -> dict[str, dict[str, Any]]:
    """Timelines of every step that sampled replicas or followed a schedule, merged across its run's clients:
    ``{series label: {"seconds": rows, "segments": rows}}``. ``parsed`` are ``results.ParsedResult``s;
    ``label_of`` maps (target, run id) to the report's series label."""
    groups: dict[tuple[str, str, int], list[Mapping[str, Any]]] = {}
    for r in parsed:
        target, run = str(r.doc["target"]["name"]), str(r.doc.get("run_id"))
        for step in r.doc.get("steps", []):
            if step.get("replicas") or step.get("spec", {}).get("schedule"):
                groups.setdefault((target, run, int(step["spec"]["index"])), []).append(step)
    out: dict[str, dict[str, Any]] = {}
    for (target, run, index), steps in sorted(groups.items()):
        label = (label_of or {}).get((target, run), f"{target} · {run}")
        started = min(t for t in (_epoch(s.get("started_at")) for s in steps) if t is not None)
        schedule = tuple(Segment.from_any(x) for x in steps[0]["spec"].get("schedule") or ())
        seconds = merge_seconds(StepStats.from_dict(s["stats"]).series for s in steps)
        samples = merge_samples(x for s in steps for x in s.get("replicas") or ())
        by_segment: dict[int, tuple[Segment, list[StepStats]]] = {}
        for s in steps:
            for seg in s.get("segments") or ():
                entry = by_segment.setdefault(int(seg["index"]), (Segment.from_any(seg["segment"]), []))
                entry[1].append(StepStats.from_dict(seg["stats"]))
        entry_label = label if index == 0 else f"{label} step {index}"
        out[entry_label] = {
            "seconds": rows(started_at=started, schedule=schedule, seconds=seconds, samples=samples,
                            series=entry_label, step=index),
            "segments": segment_rows(((i, seg, sts) for i, (seg, sts) in sorted(by_segment.items())),
                                     series=entry_label),
        }
    return out


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    return f"{v:,d}" if isinstance(v, int) else f"{v:,.1f}"


def timeline_table(table_rows: Sequence[Mapping[str, Any]], *, title: str) -> Table:
    """Console table of per-second or per-segment rows."""
    table = Table(title=title)
    cols: tuple[str, ...]
    heads: tuple[str, ...]
    if table_rows and "segment" in table_rows[0]:
        cols = ("load", "requests", "errors", "throughput_rps", "p50_ms", "p99_ms", "max_ms")
        heads = ("segment", "requests", "errors", "req/s", "p50 ms", "p99 ms", "max ms")
    else:
        cols = ("second", "offered_rps", "ok", "errors", "mean_ms", "max_ms", "replicas_running", "replicas_target")
        heads = ("s", "offered/s", "ok", "errors", "mean ms", "max ms", "replicas", "target")
    for h in heads:
        table.add_column(h, justify="left" if h == "segment" else "right")
    for r in table_rows:
        table.add_row(*(_cell(r.get(c)) for c in cols))
    return table

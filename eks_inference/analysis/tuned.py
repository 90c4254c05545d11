"""The report's "tuned vs as configured" section, read from tune trials files (``eks-inference tune``).

Per processor: the configured shape's capacity at the SLO and its USD per million against the tuned winner's, each
with its 95 % interval, whether the capacity intervals separate, and the processors ranked between their tuned
shapes (a ranking between untuned shapes says more about the shapes than about the processors). The winner is chosen
as the search chose it: the verified, measured trial with the lowest USD per million at the highest rung that has
one; a trial that failed verify, showed no capacity, or was not measured (Inferentia settings need a cluster) is
never the winner, and the section counts each kind with why.

Pure data in, data out: the trials are JSON lines as :class:`eks_inference.tune.search.TrialsFile` writes them (the
analysis package reads the records, it does not import the tune package beside it).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eks_inference.config import ConfigError

TUNED_RULE = (
    "Each processor at its tuned shape: the winner of `eks-inference tune` (verified against the fp32 reference, "
    "lowest USD per million at the SLO on the highest rung measured) beside the shape its environment configures, "
    "measured by the same capacity search in the same tune. The processor ranking in this section is made between "
    "tuned shapes. Intervals are 95 %; USD per million follows from the hourly price over the capacity, so its "
    "interval is the capacity's, inverted. Trials ran where the tune ran (its CPU, priced as the tune says): they "
    "rank shapes for that machine; settings only a cluster can measure are counted, not ranked."
)


def read_trials(path: Path) -> list[dict[str, Any]]:
    """Every record of a trials file; a line that is not one is refused with its number."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"--tune-trials {path}: cannot be read ({e.strerror}); give the trials file tune "
                          "wrote") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or "key" not in rec or "rung" not in rec:
                raise ValueError
        except ValueError:
            raise ConfigError(f"--tune-trials {path}: line {n} is not a tune trial record; give the trials file "
                              "tune wrote") from None
        out.append(rec)
    return out


def _eligible(rec: Mapping[str, Any]) -> bool:
    return (rec.get("status") == "measured" and (rec.get("verify") or {}).get("status") == "passed"
            and (rec.get("capacity") or {}).get("rps") is not None)


def _order(rec: Mapping[str, Any]) -> tuple[float, float]:
    usd = rec.get("usd_per_million")
    return (usd if usd is not None else math.inf, -float(rec["capacity"]["rps"]))


def _figures(rec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if rec is None:
        return None
    cap = rec.get("capacity") or {}
    rps, lo, hi, usd = cap.get("rps"), cap.get("rps_lo"), cap.get("rps_hi"), rec.get("usd_per_million")
    usd_lo = usd * rps / hi if usd is not None and rps and hi else None
    usd_hi = usd * rps / lo if usd is not None and rps and lo else None
    return {"key": rec["key"], "rung": rec.get("rung"), "config": rec.get("config"), "rps": rps, "rps_lo": lo,
            "rps_hi": hi, "usd_per_million": usd, "usd_lo": usd_lo, "usd_hi": usd_hi,
            "verify": (rec.get("verify") or {}).get("status"), "eligible": _eligible(rec)}


def _separate(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool | None:
    if a.get("rps_lo") is not None and b.get("rps_hi") is not None and a["rps_lo"] > b["rps_hi"]:
        return True
    if b.get("rps_lo") is not None and a.get("rps_hi") is not None and b["rps_lo"] > a["rps_hi"]:
        return True
    if None in (a.get("rps_lo"), b.get("rps_lo")):
        return None
    return False


def _dropped(recs: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in recs:
        if _eligible(r):
            continue
        if r.get("status") == "not-measured":
            why = f"not measured here: {r.get('note') or 'needs a cluster'}"
        elif r.get("status") == "failed-verify" or ((r.get("verify") or {}).get("status") not in (None, "passed")):
            why = "failed verify"
        elif r.get("status") != "measured":
            why = "did not run"
        else:
            why = "no capacity shown at the SLO"
        out[why] = out.get(why, 0) + 1
    return out


def tuned_section(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The section's data: one entry per processor (as the trials' context names it), ranked by the tuned winner's
    USD per million (processors without a winner last)."""
    by_proc: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by_proc.setdefault(str((r.get("context") or {}).get("processor") or "?"), []).append(r)
    rows: list[dict[str, Any]] = []
    for proc, recs in by_proc.items():
        rungs = [r.get("rung") for r in recs if r.get("status") != "not-measured"]
        order = list(dict.fromkeys(rungs))
        winner = None
        for rung in reversed(order):
            ok = sorted((r for r in recs if r.get("rung") == rung and _eligible(r)), key=_order)
            if ok:
                winner = ok[0]
                break
        conf_recs = [r for r in recs if r.get("configured")]
        configured = None
        if conf_recs:
            same = [r for r in conf_recs if winner is not None and r.get("rung") == winner.get("rung")]
            configured = (same or sorted(conf_recs, key=lambda r: order.index(r.get("rung"))
                                         if r.get("rung") in order else -1))[-1]
        w, c = _figures(winner), _figures(configured)
        ratio = (w["rps"] / c["rps"]) if w and c and w.get("rps") and c.get("rps") else None
        ctx = (recs[0].get("context") or {}) if recs else {}
        rows.append({
            "processor": proc, "tuned": w, "configured": c, "capacity_ratio": ratio,
            "usd_ratio": (w["usd_per_million"] / c["usd_per_million"]) if w and c and w.get("usd_per_million")
            and c.get("usd_per_million") else None,
            "separate": _separate(w, c) if w and c else None,
            "same_rung": bool(w and c and w["rung"] == c["rung"]),
            "trials": len(recs), "dropped": _dropped(recs),
            "slo": {"ms": ctx.get("slo_ms"), "percentile": ctx.get("percentile")}, "price": ctx.get("price"),
            "model": ctx.get("model"), "env": ctx.get("env"),
        })
    rows.sort(key=lambda r: (r["tuned"] is None or r["tuned"]["usd_per_million"] is None,
                             (r["tuned"] or {}).get("usd_per_million") or 0.0))
    rank = 0
    for r in rows:
        if r["tuned"] is not None and r["tuned"]["usd_per_million"] is not None:
            rank += 1
            r["rank"] = rank
        else:
            r["rank"] = None
    return {"rule": TUNED_RULE, "processors": rows}


def _num(v: Any, spec: str = ",.4g") -> str:
    return "n/a" if v is None else format(float(v), spec)


def figure_text(f: Mapping[str, Any] | None) -> str:
    if not f:
        return "none shown"
    hi = "open" if f.get("rps_hi") is None else _num(f["rps_hi"])
    usd_hi = "open" if f.get("usd_hi") is None else _num(f["usd_hi"])
    return (f"{_num(f['rps'])} req/s [{_num(f.get('rps_lo'))}, {hi}], ${_num(f.get('usd_per_million'))}/1M "
            f"[{_num(f.get('usd_lo'))}, {usd_hi}]")


def _verdict(r: Mapping[str, Any]) -> str:
    if r["tuned"] is None:
        return "no tuned shape: " + (", ".join(f"{n} {k}" for k, n in r["dropped"].items()) or "no trials")
    if r["configured"] is None:
        return "the configured shape was not measured in this tune"
    if r["tuned"]["key"] == r["configured"]["key"]:
        return "the configured shape is the tuned one"
    apart = {True: "intervals separate", False: "intervals overlap", None: "intervals cannot be compared"}[
        r["separate"]]
    rung = "" if r["same_rung"] else f" (configured measured at {r['configured']['rung']} only)"
    return f"{_num(r['capacity_ratio'], '.2f')}x the capacity, {_num(r['usd_ratio'], '.2f')}x the cost; {apart}{rung}"


def tuned_lines(section: Mapping[str, Any]) -> list[str]:
    """Plain text for the console."""
    out = ["Tuned vs as configured (processors ranked between tuned shapes)"]
    for r in section["processors"]:
        slo = r["slo"]
        out.append(f"  {r['rank'] or '-'}. {r['processor']} ({r.get('model')} in {r.get('env')}, "
                   f"{slo.get('percentile')} <= {slo.get('ms')} ms; priced as {r.get('price')})")
        out.append(f"     tuned:      {(r['tuned'] or {}).get('key', '-')}: {figure_text(r['tuned'])}")
        out.append(f"     configured: {(r['configured'] or {}).get('key', '-')}: {figure_text(r['configured'])}")
        out.append(f"     {_verdict(r)}")
        if r["dropped"]:
            out.append("     not chosen: " + "; ".join(f"{n} {k}" for k, n in sorted(r["dropped"].items())))
    out.append(section["rule"])
    return out


def tuned_html(section: Mapping[str, Any] | None) -> str:
    """The HTML section (empty without tune trials)."""
    if not section:
        return ""
    e = html.escape
    rows = []
    for r in section["processors"]:
        rows.append(
            "<tr>" + "".join(f"<td{c}>{e(str(v))}</td>" for c, v in (
                ("", r["rank"] or "–"), (' class="l"', r["processor"]),
                (' class="l"', f"{(r['tuned'] or {}).get('key', '-')}: {figure_text(r['tuned'])}"),
                (' class="l"', f"{(r['configured'] or {}).get('key', '-')}: {figure_text(r['configured'])}"),
                (' class="l"', _verdict(r)),
                (' class="l"', "; ".join(f"{n} {k}" for k, n in sorted(r["dropped"].items())) or "none"))) + "</tr>")
    return ("<h2>Tuned vs as configured (processors ranked between tuned shapes)</h2>\n"
            '<div class="wrap"><table id="tuned"><tr><th>rank</th><th class="l">processor</th>'
            '<th class="l">tuned: capacity at the SLO [95 %], USD/1M [95 %]</th>'
            '<th class="l">as configured</th><th class="l">tuned vs configured</th>'
            '<th class="l">trials not chosen</th></tr>\n' + "\n".join(rows) + "</table></div>\n"
            f'<p class="note">{e(section["rule"])}</p>\n')

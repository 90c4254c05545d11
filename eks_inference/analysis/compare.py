"""``loadtest compare BASE NEW``: did a change move a target's figures beyond the noise both runs measured?

Per target found in both reports, four figures, each with the 95 % interval its run measured:

* **capacity at the SLO** (higher is better): the report's capacity block (``capacity``: ``rps`` with ``rps_lo``
  and ``rps_hi``) where it has one; otherwise the bracket the steps' SLO verdicts give: the highest open-loop
  rate that met the SLO below the lowest that missed it (the capacity lies between them; no miss: no upper end);
* **p99 at a common rate** (lower is better): the step's ``latency_ms.p99`` with ``p99_lo`` / ``p99_hi``, at the
  highest requested rate both runs measured at which BASE met the SLO (where both kept up: a rate past both
  capacities compares two growing queues, whose p99 says only how long the step ran), preferring a rate where
  neither run's step was contended or behind;
* **p50 at the same rate** (lower is better): the median, which a slower forward moves at any load and a busy host
  moves little (measured: 22.6-24.2 ms over three runs of one 20 ms-a-forward server at 100 % CPU pressure, 30.0-30.7
  ms with 26 ms forwards), where the p99 of a few hundred requests has no upper bound or drifts with the host;
* **USD per million inferences** at each run's best step (lower is better): its interval from the step's
  ``usd_per_million_inferences_at_step_lo`` / ``_hi`` where the report has them, else from the best step's
  inferences/s interval and the target's hourly cost.

A figure is ``worse`` or ``better`` only when the two intervals do not overlap (for capacity brackets: NEW's
upper end at or below BASE's lower end) *and* the estimates differ by more than ``min_change`` of BASE's
(for a tail figure, p99 or capacity, :data:`CONTENDED_MIN_CHANGE` where either run's figure rests on a contended
step): the intervals cover sampling
noise within a run, the floor covers the drift between runs that one run cannot see (repeats,
:mod:`eks_inference.measure.intervals`, widen the intervals by what they showed). A figure without an
interval on either side is ``n/a``, never a verdict. A target is a ``regression`` when any figure is worse, an
``improvement`` when one is better and none worse, ``same`` otherwise, ``inconclusive`` when no figure could be
compared. Figures measured on a contended host (:mod:`eks_inference.measure.contention`) say so, and a figure that
is worse only as NEW measured it on a contended host is ``n/a``: a regression must rest on a measurement the
machine did not shape (a BASE measured on a contended host and a clean, worse NEW is still a regression).

Pure functions over two ``report.json`` documents (:func:`eks_inference.analysis.report.build_document`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MIN_CHANGE = 0.10
CONTENDED_MIN_CHANGE = 0.50
"""The floor for a figure resting on a step measured on a contended host or by a client behind schedule: such a
host moves tails between runs by tens of percent (measured: one unchanged server's p99 at 170 req/s was 72.5 ms
[69.9, 89.7] in one run and 56.1 ms [51.6, 62.1] in the next on a two-core machine at 99 % CPU pressure), which
no interval of one run shows. Only a larger move counts there."""


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """A figure and its 95 % interval; a missing bound is unknown (``hi`` None may also mean "no upper end" for a
    capacity bracket, see ``open_above``)."""

    value: float | None
    lo: float | None
    hi: float | None
    open_above: bool = False
    """``hi`` None because nothing bounds it from above (a capacity no step exceeded), not because it is unknown."""
    contended: bool = False
    note: str = ""

    def text(self, fmt: str) -> str:
        if self.value is None:
            return "n/a"
        lo = "?" if self.lo is None else format(self.lo, fmt)
        hi = "∞" if self.open_above else ("?" if self.hi is None else format(self.hi, fmt))
        return f"{format(self.value, fmt)} [{lo}, {hi}]"


@dataclass(frozen=True, kw_only=True)
class FigureComparison:
    name: str
    label: str
    unit: str
    higher_is_better: bool
    base: Estimate
    new: Estimate
    verdict: str
    """``worse`` | ``better`` | ``same`` | ``n/a``."""
    why: str
    change: float | None
    """(NEW − BASE) / BASE of the estimates."""


@dataclass(frozen=True, kw_only=True)
class TargetComparison:
    target: str
    verdict: str
    """``regression`` | ``improvement`` | ``same`` | ``inconclusive``."""
    figures: tuple[FigureComparison, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)


def judge(base: Estimate, new: Estimate, *, higher_is_better: bool, min_change: float) -> tuple[str, str, float | None]:
    """``(verdict, why, relative change)`` of one figure from the two runs' estimates and intervals."""
    b_empty = base.value is None and base.lo is None and base.hi is None
    n_empty = new.value is None and new.lo is None and new.hi is None
    if b_empty or n_empty:
        return "n/a", "not measured in " + ("both runs" if b_empty and n_empty else "BASE" if b_empty else "NEW"), None
    change = ((new.value - base.value) / base.value
              if base.value is not None and new.value is not None and base.value else None)
    b_hi = math.inf if base.hi is None and base.open_above else base.hi
    n_hi = math.inf if new.hi is None and new.open_above else new.hi
    if (base.lo is None and b_hi is None) or (new.lo is None and n_hi is None):
        return "n/a", "no interval in " + ("BASE" if base.lo is None and b_hi is None else "NEW"), change
    # Do the intervals part? Higher-is-better: worse when NEW's top is at or below BASE's bottom.
    if higher_is_better:
        worse = n_hi is not None and base.lo is not None and n_hi <= base.lo
        better = b_hi is not None and new.lo is not None and new.lo >= b_hi
    else:
        worse = new.lo is not None and b_hi is not None and new.lo > b_hi
        better = n_hi is not None and base.lo is not None and n_hi < base.lo
    big = change is None or abs(change) > min_change  # no estimate to measure it by: the intervals decide
    if (worse or better) and not big:
        return "same", f"intervals part, but the change {change:+.1%} is within ±{min_change:.0%}", change
    moved = "intervals part" if change is None else f"{change:+.1%}"
    if worse:
        return "worse", f"{moved}, beyond both runs' intervals", change
    if better:
        return "better", f"{moved}, beyond both runs' intervals", change
    return "same", "the intervals overlap", change


# -- figures out of a report document --------------------------------------------------------------------------

def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _trusted(step: Mapping[str, Any]) -> bool:
    return not step.get("contended") and not step.get("behind_schedule") and step.get("status", "complete") == \
        "complete"


def _rate_steps(target: Mapping[str, Any]) -> dict[float, Mapping[str, Any]]:
    """Open-loop steps at a fixed requested rate, by rate (the last one measured where a rate repeats)."""
    out: dict[float, Mapping[str, Any]] = {}
    for s in target.get("steps") or []:
        rate = _num(s.get("requested_rate"))
        if s.get("mode") == "open" and rate and not s.get("schedule"):
            out[rate] = s
    return out


def capacity(target: Mapping[str, Any]) -> Estimate:
    block = target.get("capacity")
    if isinstance(block, Mapping):  # the report's own, which leaves contended and unsure steps out
        lo, hi = _num(block.get("rps_lo")), _num(block.get("rps_hi"))
        value = _num(block.get("rps"))
        return Estimate(value=value if value is not None else lo, lo=lo, hi=hi,
                        open_above=hi is None and lo is not None, contended=bool(block.get("excluded")),
                        note="the report's capacity at the SLO")
    steps = _rate_steps(target)
    if not steps:
        return Estimate(value=None, lo=None, hi=None, note="no open-loop steps at a fixed rate")
    fails = [r for r, s in steps.items() if not s.get("slo_met")]
    hi = min(fails) if fails else None
    passes = [r for r, s in steps.items() if s.get("slo_met") and (hi is None or r < hi)]
    lo = max(passes) if passes else None
    used = [s for r, s in steps.items() if r in (lo, hi)]
    return Estimate(value=lo, lo=lo, hi=hi, open_above=hi is None, contended=any(not _trusted(s) for s in used),
                    note="bracket of the steps' SLO verdicts")


def common_rate(base: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[float | None, str]:
    """The rate at which to compare p99 (see the module docstring), and why that one."""
    b, n = _rate_steps(base), _rate_steps(new)
    common = sorted(set(b) & set(n))
    if not common:
        return None, "no requested rate measured in both runs"
    met = [r for r in common if b[r].get("slo_met")]
    if not met:
        return common[0], "BASE met the SLO at no common rate: the lowest common rate"
    clean = [r for r in met if _trusted(b[r]) and _trusted(n[r])]
    if clean:
        return clean[-1], "the highest common rate at which BASE met the SLO"
    return met[-1], "the highest common rate at which BASE met the SLO (contended in a run: no clean step)"


def percentile_at(target: Mapping[str, Any], rate: float, key: str = "p99") -> Estimate:
    step = _rate_steps(target)[rate]
    lat = step.get("latency_ms") or {}
    return Estimate(value=_num(lat.get(key)), lo=_num(lat.get(f"{key}_lo")), hi=_num(lat.get(f"{key}_hi")),
                    contended=not _trusted(step))


def usd_per_million(target: Mapping[str, Any]) -> Estimate:
    best = target.get("best")
    value = _num(target.get("usd_per_million_inferences"))
    if not isinstance(best, Mapping) or value is None:
        return Estimate(value=None, lo=None, hi=None, note="not priced or no step met the SLO")
    lo = _num(best.get("usd_per_million_inferences_at_step_lo"))
    hi = _num(best.get("usd_per_million_inferences_at_step_hi"))
    hourly = _num(target.get("hourly_usd"))
    if lo is None and hi is None and hourly:
        ips_lo, ips_hi = _num(best.get("inferences_per_s_lo")), _num(best.get("inferences_per_s_hi"))
        lo = hourly / (ips_hi * 3600.0) * 1e6 if ips_hi else None
        hi = hourly / (ips_lo * 3600.0) * 1e6 if ips_lo else None
    return Estimate(value=value, lo=lo, hi=hi, contended=not _trusted(best))


def compare_targets(base: Mapping[str, Any], new: Mapping[str, Any], *, min_change: float) -> TargetComparison:
    name = str((base.get("target") or {}).get("name"))
    figs = []

    def add(key: str, label: str, unit: str, higher: bool, b: Estimate, n: Estimate, *, tail: bool = True) -> None:
        floor = max(min_change, CONTENDED_MIN_CHANGE) if tail and (b.contended or n.contended) else min_change
        verdict, why, change = judge(b, n, higher_is_better=higher, min_change=floor)
        if verdict == "worse" and n.contended:
            # the machine may have made NEW worse: a regression must be shown by a measurement it did not shape
            verdict, why = "n/a", (f"{why}, but NEW was measured on a contended host or by a client behind "
                                   "schedule, so no verdict rests on it: measure NEW again on a quieter machine")
        elif verdict != "n/a" and (b.contended or n.contended):
            why += "; measured on a contended host or by a client behind schedule in " + \
                ("both runs" if b.contended and n.contended else "BASE" if b.contended else "NEW")
        figs.append(FigureComparison(name=key, label=label, unit=unit, higher_is_better=higher, base=b, new=n,
                                     verdict=verdict, why=why, change=change))

    add("capacity_rps", "capacity at SLO", "req/s", True, capacity(base), capacity(new))
    rate, why_rate = common_rate(base, new)
    if rate is None:
        none = Estimate(value=None, lo=None, hi=None)
        for key in ("p99", "p50"):
            figs.append(FigureComparison(name=f"{key}_ms", label=f"{key} at a common rate", unit="ms",
                                         higher_is_better=False, base=none, new=none, verdict="n/a", why=why_rate,
                                         change=None))
    else:
        for key in ("p99", "p50"):
            add(f"{key}_ms", f"{key} at {rate:g} req/s", "ms", False, percentile_at(base, rate, key),
                percentile_at(new, rate, key), tail=key == "p99")
    add("usd_per_million", "USD per 1M inferences", "USD", False, usd_per_million(base), usd_per_million(new))
    verdicts = {f.verdict for f in figs}
    if "worse" in verdicts:
        verdict = "regression"
    elif "better" in verdicts:
        verdict = "improvement"
    elif verdicts == {"n/a"}:
        verdict = "inconclusive"
    else:
        verdict = "same"
    notes = (f"p99 compared at {rate:g} req/s: {why_rate}",) if rate is not None else ()
    return TargetComparison(target=name, verdict=verdict, figures=tuple(figs), notes=notes)


def _by_target(doc: Mapping[str, Any], side: str) -> tuple[dict[str, Mapping[str, Any]], list[str]]:
    """Each target's one series; the names of targets with several runs (which the caller must choose among)."""
    out: dict[str, Mapping[str, Any]] = {}
    several: list[str] = []
    for t in doc.get("targets") or []:
        name = str((t.get("target") or {}).get("name"))
        if name in out:
            several.append(f"{side}: target {name!r} has several runs ({out[name].get('run_id')}, {t.get('run_id')})")
        out[name] = t
    return out, several


def compare_documents(base: Mapping[str, Any], new: Mapping[str, Any], *,
                      min_change: float = DEFAULT_MIN_CHANGE) -> tuple[list[TargetComparison], list[str]]:
    """Every target in both reports compared; and notes (targets found on one side only).

    :raises ValueError: one line per problem when a report holds several runs of one target.
    """
    b, b_several = _by_target(base, "BASE")
    n, n_several = _by_target(new, "NEW")
    if b_several or n_several:
        raise ValueError("\n".join(b_several + n_several))
    notes = [f"target {t!r} only in BASE" for t in sorted(set(b) - set(n))]
    notes += [f"target {t!r} only in NEW" for t in sorted(set(n) - set(b))]
    return [compare_targets(b[t], n[t], min_change=min_change) for t in sorted(set(b) & set(n))], notes


def to_dict(comparisons: Sequence[TargetComparison], notes: Sequence[str], *, min_change: float) -> dict[str, Any]:
    return {
        "min_change": min_change,
        "regressions": [c.target for c in comparisons if c.verdict == "regression"],
        "targets": [{
            "target": c.target, "verdict": c.verdict, "notes": list(c.notes),
            "figures": [{"name": f.name, "label": f.label, "unit": f.unit, "higher_is_better": f.higher_is_better,
                         "verdict": f.verdict, "why": f.why, "change": f.change,
                         "base": vars(f.base), "new": vars(f.new)} for f in c.figures],
        } for c in comparisons],
        "notes": list(notes),
    }

"""A budgeted search over serving shapes: successive halving, resumable from a JSONL trials file.

Why successive halving and not a model-based optimiser (Optuna's TPE, Bayesian optimisation): a trial here is a
real server measured under load, minutes each, and a 10-minute budget buys a few dozen screens at most; a model
of the response surface needs more trials than that to beat random draws, while halving spends the budget where
it counts (a short screen of many shapes, then a longer measurement with repeats and intervals of the best few)
and needs no dependency. Each rung's trials are drawn in a seeded order, so a rerun with the same trials file and
seed walks the same path and skips every trial already recorded.

A trial that fails ``verify`` is recorded with its verdict and never promoted or chosen; a trial whose capacity
could not be shown is recorded and never chosen either.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eks_inference.config import ConfigError
from eks_inference.tune.space import Candidate

TRIALS_FORMAT = "eks-inference/tune-trial/v1"


@dataclass(frozen=True)
class Rung:
    """One level of the search: how hard each trial is measured there and what one is expected to cost."""

    name: str
    expected_s: float
    """Seconds one trial is expected to take, until trials of this rung in this run say otherwise."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """What the measurement function needs (step duration, repeats, ...); recorded with each trial."""


Measure = Callable[[Candidate, Rung], dict[str, Any]]
"""Runs one trial; returns ``status`` (``measured``, ``failed-verify``, ``failed``), ``verify`` (the verdict),
``capacity`` (:func:`eks_inference.measure.capacity.capacity_at_slo`'s block), ``p99_ms`` and ``throughput_rps`` at
the capacity estimate, ``usd_per_million`` and a ``note``."""


def eligible(rec: Mapping[str, Any]) -> bool:
    """Whether a trial may be promoted or chosen: measured, verified, with a capacity at the SLO."""
    return (rec.get("status") == "measured" and (rec.get("verify") or {}).get("status") == "passed"
            and (rec.get("capacity") or {}).get("rps") is not None)


def _order(rec: Mapping[str, Any]) -> tuple[float, float]:
    usd = rec.get("usd_per_million")
    return (usd if usd is not None else math.inf, -float(rec["capacity"]["rps"]))


class TrialsFile:
    """Append-only JSON lines, one per finished trial; a rerun skips what it holds."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[tuple[str, str], dict[str, Any]]:
        done: dict[tuple[str, str], dict[str, Any]] = {}
        if not self.path.exists():
            return done
        for n, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                key = (str(rec["key"]), str(rec["rung"]))
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"--trials-file {self.path}: line {n} is not a trial record; remove the line or "
                                  "give another file") from None
            done[key] = rec
        return done

    def append(self, rec: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


@dataclass
class Outcome:
    records: list[dict[str, Any]]
    """Every trial of this search, run now or read back, in the order the search met them."""
    winner: dict[str, Any] | None
    ran: int
    skipped: int
    """Trials found in the trials file and not run again."""
    stopped: str | None
    """Why the search ended before its last rung was done (the budget), or None."""
    elapsed_s: float


def successive_halving(candidates: Sequence[Candidate], measure: Measure, *, rungs: Sequence[Rung],
                       budget_s: float, trials: TrialsFile, eta: int = 3, screen_share: float = 0.5,
                       keep: Sequence[Candidate] = (), context: Mapping[str, Any] | None = None,
                       clock: Callable[[], float] = time.monotonic,
                       say: Callable[[str], None] = lambda _m: None) -> Outcome:
    """Measure ``candidates`` at the first rung, promote the best ``1/eta`` of them (and ``keep``, the configured
    shape, for the comparison) to the next, and so on, within ``budget_s`` of this run's time.

    Every rung but the last may spend until ``screen_share`` of the budget (split evenly among them); a trial is
    started only when the time left for its rung holds what trials of that rung have cost so far in this run (or the
    rung's expected cost before the first). The winner is the eligible trial with the lowest USD per million at the
    highest rung that has one.
    """
    if not rungs:
        raise ConfigError("tune: no rungs to measure at")
    if budget_s <= 0:
        raise ConfigError(f"--budget-minutes: {budget_s / 60:g} is not positive; give minutes, e.g. 10")
    start = clock()
    # a trial measured under another SLO, environment or machine is no answer to this search
    done = {k: v for k, v in trials.load().items() if v.get("context") == dict(context or {})}
    records: list[dict[str, Any]] = []
    ran = skipped = 0
    stopped = None
    alive = list(candidates)
    last = len(rungs) - 1
    by_rung: list[list[dict[str, Any]]] = []
    for r, rung in enumerate(rungs):
        limit = start + (budget_s * screen_share * (r + 1) / last if r < last and last else budget_s)
        costs: list[float] = []
        here: list[dict[str, Any]] = []
        for c in alive:
            rec = done.get((c.key, rung.name))
            if rec is not None:
                skipped += 1
                here.append(rec)
                continue
            expected = max(costs) if costs else rung.expected_s
            if clock() + expected > limit:
                stopped = (f"the budget: {rung.name} trial {len(here) + 1} of {len(alive)} would need "
                           f"~{expected:.0f} s with {max(0.0, limit - clock()):.0f} s left for this rung")
                say(f"  {stopped}")
                break
            say(f"  {rung.name} {len(here) + 1}/{len(alive)}: {c.describe()}")
            t0 = clock()
            out = measure(c, rung)
            seconds = clock() - t0
            costs.append(seconds)
            rec = {"format": TRIALS_FORMAT, "key": c.key, "rung": rung.name, "config": c.to_dict(),
                   "patch": c.patch(), "settings": dict(rung.settings), "context": dict(context or {}),
                   "seconds": round(seconds, 1), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   # the environment's own shape, so a report can set the tuned winner beside it
                   **({"configured": True} if c in keep else {}), **out}
            trials.append(rec)
            ran += 1
            here.append(rec)
        by_rung.append(here)
        records.extend(here)
        if r == last or (stopped and r < last and not here):
            break
        ok = sorted((x for x in here if eligible(x)), key=_order)
        n = max(1, math.ceil(len(here) / eta))
        promoted = [Candidate.from_dict(x["config"]) for x in ok[:n]]
        measured_keys = {x["key"] for x in ok}
        for k in keep:
            if k not in promoted and k.key in measured_keys:
                promoted.append(k)
        if not promoted:
            break
        alive = promoted
    winner = None
    for here in reversed(by_rung):
        ok = sorted((x for x in here if eligible(x)), key=_order)
        if ok:
            winner = ok[0]
            break
    return Outcome(records=records, winner=winner, ran=ran, skipped=skipped, stopped=stopped,
                   elapsed_s=clock() - start)

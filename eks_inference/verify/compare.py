"""Judge a target's answers against the fp32 reference, probe by probe, with per-task tolerances.

Pure Python (no numpy, no torch): the verdict is computed the same way in the load-test image and on a
laptop. A verdict names its worst input, because "0.62 somewhere" helps nobody: "0.62 on ladder-190 (190
words of prose)" points at truncation.

Tolerances (:class:`Tolerances`):

* embedding — cosine similarity to the reference vector ≥ ``min_cosine`` (0.99) for *every* input; bf16
  and compiled graphs stay far above it (the compiler's own check asks 0.99 of bf16), a wrong model,
  tokenizer or truncation falls far below.
* classification — the same label for ≥ ``min_label_agreement`` (99 %) of inputs, where a near tie in the
  reference (its top two probabilities within ``max_score_delta``) accepts either label, and every class
  probability within ``max_score_delta`` (0.05) of the reference.
* question answering — the same answer span (character offsets) for every input.

For every task the ``truncated`` flag must agree with the reference's on every input: a server that cuts
inputs shorter than its ``/info`` says, or cuts without saying so, fails even where the cut happens to
change little.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eks_inference.config import Task
from eks_inference.verify.probes import Probe


@dataclass(frozen=True, kw_only=True)
class Tolerances:
    min_cosine: float = 0.99
    min_label_agreement: float = 0.99
    max_score_delta: float = 0.05

    def criteria(self, task: Task) -> str:
        """The rule in words, printed with every verdict."""
        if task is Task.EMBEDDING:
            rule = f"cosine to the fp32 reference >= {self.min_cosine:g} for every input"
        elif task is Task.CLASSIFICATION:
            rule = (f"same label for >= {self.min_label_agreement:.0%} of inputs (near ties accept either) and "
                    f"every class probability within {self.max_score_delta:g} of the fp32 reference")
        else:
            rule = "the same answer span as the fp32 reference for every input"
        return rule + "; truncation flags as the reference's"


@dataclass(frozen=True, kw_only=True)
class Row:
    """One probe's comparison. ``score``: cosine (embedding), largest probability difference
    (classification) or 1/0 for the same/another span (QA)."""

    probe: Probe
    ok: bool
    score: float | None
    detail: str
    label_agrees: bool = True
    label_only: bool = False
    """Classification: the label is the row's only fault, which the agreement fraction counts instead."""

    def to_dict(self) -> dict[str, Any]:
        return {"probe": self.probe.id, "input": self.probe.short(80), "what": self.probe.what, "ok": self.ok,
                "score": self.score, "detail": self.detail}


@dataclass(frozen=True, kw_only=True)
class Comparison:
    task: Task
    rows: tuple[Row, ...]
    tolerances: Tolerances = field(default_factory=Tolerances)

    @property
    def label_agreement(self) -> float | None:
        if self.task is not Task.CLASSIFICATION or not self.rows:
            return None
        return sum(r.label_agrees for r in self.rows) / len(self.rows)

    @property
    def passed(self) -> bool:
        if not self.rows:
            return False
        if self.task is Task.CLASSIFICATION:
            agreement = self.label_agreement or 0.0
            return agreement >= self.tolerances.min_label_agreement and all(r.ok or r.label_only for r in self.rows)
        return all(r.ok for r in self.rows)

    @property
    def worst(self) -> Row | None:
        """The failing row that is furthest off (or the closest call when all pass)."""
        if not self.rows:
            return None
        return min(self.rows, key=self.sort_key)

    def sort_key(self, r: Row) -> tuple[Any, ...]:
        if self.task is Task.EMBEDDING:
            rank = r.score if r.score is not None else -math.inf
        elif self.task is Task.CLASSIFICATION:
            rank = -(r.score if r.score is not None else math.inf)
        else:
            rank = r.score if r.score is not None else -math.inf
        return (r.ok, r.label_agrees, rank, r.probe.id)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    num = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return num / (na * nb)


def _is_vector(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in v)


def _trunc_note(got: Any, want: bool) -> str | None:
    if got is want:
        return None
    if not isinstance(got, bool):
        return f"truncated flag {got!r} is not a boolean"
    return ("the server says it truncated this input, the reference does not" if got
            else "the reference truncates this input at max_seq_length, the server says it did not")


def _embedding_row(p: Probe, got: Any, want: Any, trunc_got: Any, trunc_want: bool, tol: Tolerances) -> Row:
    if not _is_vector(got):
        return Row(probe=p, ok=False, score=None, detail=f"not a vector of finite numbers: {str(got)[:60]}")
    if len(got) != len(want):
        return Row(probe=p, ok=False, score=0.0, detail=f"{len(got)} dimensions, the reference has {len(want)}")
    cos = _cosine(got, want)
    notes = []
    if cos < tol.min_cosine:
        notes.append(f"cosine {cos:.4f} < {tol.min_cosine:g}")
    t = _trunc_note(trunc_got, trunc_want)
    if t:
        notes.append(t)
    return Row(probe=p, ok=not notes, score=cos, detail="; ".join(notes) or f"cosine {cos:.6f}")


def _class_row(p: Probe, got: Any, want: Mapping[str, Any], trunc_got: Any, trunc_want: bool,
               tol: Tolerances) -> Row:
    if not isinstance(got, Mapping) or not isinstance(got.get("scores"), Mapping):
        return Row(probe=p, ok=False, score=None, label_agrees=False,
                   detail=f"not a classification answer ({{label, score, scores}}): {str(got)[:60]}")
    ref_scores: Mapping[str, float] = want["scores"]
    got_scores = got["scores"]
    if set(got_scores) != set(ref_scores):
        return Row(probe=p, ok=False, score=None, label_agrees=False,
                   detail=f"labels {sorted(got_scores)} differ from the reference's {sorted(ref_scores)}")
    try:
        delta = max(abs(float(got_scores[k]) - float(ref_scores[k])) for k in ref_scores)
    except (TypeError, ValueError):
        return Row(probe=p, ok=False, score=None, label_agrees=False, detail="scores are not numbers")
    top = sorted(ref_scores.values(), reverse=True)
    near_tie = len(top) > 1 and top[0] - top[1] <= tol.max_score_delta
    label = str(got.get("label"))
    agrees = label == want["label"] or (near_tie and label in ref_scores
                                        and top[0] - float(ref_scores[label]) <= tol.max_score_delta)
    notes = []
    if delta > tol.max_score_delta:
        notes.append(f"a class probability differs by {delta:.4f} > {tol.max_score_delta:g}")
    t = _trunc_note(trunc_got, trunc_want)
    if t:
        notes.append(t)
    hard = bool(notes)
    if not agrees:
        notes.insert(0, f"label {label!r}, the reference says {want['label']!r} "
                        f"(p={float(ref_scores[want['label']]):.3f})")
    return Row(probe=p, ok=not notes, score=delta, label_agrees=agrees, label_only=not agrees and not hard,
               detail="; ".join(notes) or f"label {label!r}, max |Δp| {delta:.4f}")


def _qa_row(p: Probe, got: Any, want: Mapping[str, Any], trunc_got: Any, trunc_want: bool) -> Row:
    if not isinstance(got, Mapping) or not all(k in got for k in ("start", "end", "answer")):
        return Row(probe=p, ok=False, score=None, detail=f"not a QA answer ({{answer, start, end}}): {str(got)[:60]}")
    same = (got["start"], got["end"]) == (want["start"], want["end"])
    notes = []
    if not same:
        notes.append(f"span {got['start']}:{got['end']} {str(got['answer'])[:30]!r}, the reference's is "
                     f"{want['start']}:{want['end']} {str(want['answer'])[:30]!r}")
    t = _trunc_note(trunc_got, trunc_want)
    if t:
        notes.append(t)
    return Row(probe=p, ok=not notes, score=1.0 if same else 0.0,
               detail="; ".join(notes) or f"span {want['start']}:{want['end']} {str(want['answer'])[:30]!r}")


def compare(task: Task, probes: Sequence[Probe], got_outputs: Sequence[Any], got_truncated: Sequence[Any],
            ref_outputs: Sequence[Any], ref_truncated: Sequence[bool],
            tolerances: Tolerances | None = None) -> Comparison:
    """One row per probe; all sequences are in probe order."""
    tol = tolerances or Tolerances()
    n = len(probes)
    if not (len(got_outputs) == len(got_truncated) == len(ref_outputs) == len(ref_truncated) == n):
        raise ValueError("compare() needs one output and one truncation flag per probe on both sides")
    rows = []
    for i, p in enumerate(probes):
        got, want, tg, tw = got_outputs[i], ref_outputs[i], got_truncated[i], ref_truncated[i]
        if task is Task.EMBEDDING:
            rows.append(_embedding_row(p, got, want, tg, tw, tol))
        elif task is Task.CLASSIFICATION:
            rows.append(_class_row(p, got, want, tg, tw, tol))
        else:
            rows.append(_qa_row(p, got, want, tg, tw))
    return Comparison(task=task, rows=tuple(rows), tolerances=tol)

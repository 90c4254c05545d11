"""Which member of a family each request names: a seeded draw over N model ids, uniform or Zipf.

Real families are skewed: a few customers send most requests, most send few. ``zipf:S`` gives the model of rank
``k`` (1-based) a share proportional to ``1 / k**S`` (S > 0; 1.1 is a common fit for per-tenant traffic), so the hot
set stays resident while the tail costs a load now and then; ``uniform`` gives every model the same share, the worst
case for a cache. The draw is a fixed sequence from ``seed``: the same arguments send the same ids in the same order,
on every client and every run. Pure Python: the load-test image imports it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from eks_inference.artifacts.family_index import MODEL_ID_HEADER, check_model_id
from eks_inference.config import ConfigError
from eks_inference.measure.working_set import MIX_RE

SEQUENCE_LENGTH = 8192
"""Ids drawn per run; requests cycle through them (long enough that a step's mix matches its shares)."""


@dataclass(frozen=True)
class ModelMix:
    kind: str
    """``uniform`` or ``zipf``."""
    exponent: float = 0.0

    @property
    def label(self) -> str:
        return "uniform" if self.kind == "uniform" else f"zipf:{self.exponent:g}"

    def weights(self, n: int) -> list[float]:
        if self.kind == "uniform":
            return [1.0] * n
        return [1.0 / (k ** self.exponent) for k in range(1, n + 1)]

    def shares(self, n: int) -> list[float]:
        w = self.weights(n)
        total = sum(w)
        return [x / total for x in w]


def parse_mix(spec: str, option: str = "--model-mix") -> ModelMix:
    m = MIX_RE.match(spec.strip()) if isinstance(spec, str) else None
    if m is None:
        raise ConfigError(f"{option}: {spec!r} is not a model mix; use uniform or zipf:S with S > 0, e.g. zipf:1.1")
    if m["s"] is None:
        return ModelMix("uniform")
    s = float(m["s"])
    if not 0 < s <= 10:
        raise ConfigError(f"{option}: zipf exponent {s:g} must be in (0, 10], e.g. zipf:1.1")
    return ModelMix("zipf", s)


def default_ids(n: int) -> list[str]:
    """``m000`` .. : the ids ``make demo-family`` and ``bench/family.py`` publish their derived members under."""
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 100_000:
        raise ConfigError(f"--models: {n!r} must be a whole number in 1..100000")
    return [f"m{i:03d}" for i in range(n)]


def check_ids(ids: Sequence[str]) -> list[str]:
    out = [check_model_id(i, "--model-ids") for i in ids]
    if len(set(out)) != len(out):
        raise ConfigError(f"--model-ids: {list(ids)} repeats an id; name each model once")
    return out


def draw(mix: ModelMix, ids: Sequence[str], *, seed: int, count: int = SEQUENCE_LENGTH) -> list[str]:
    """``count`` ids drawn from ``ids`` (rank order: the first is the hottest) with ``mix``'s shares."""
    rng = random.Random(f"model-mix:{seed}")
    return rng.choices(list(ids), weights=mix.weights(len(ids)), k=count)


def request_headers(sequence: Sequence[str]) -> list[dict[str, str]]:
    return [{MODEL_ID_HEADER: mid} for mid in sequence]

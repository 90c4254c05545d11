"""A family's working set as a load-test step saw it, and the hit ratio it implies for k replicas.

``plan`` sizes a model-aware family from how many distinct members its replicas hold between them, so a step of a
family records what that needs (:func:`step_working_set`): the request mix (``uniform`` or ``zipf:S`` over N members,
hottest first, the popularity curve the requests were drawn from), the routing and the replicas the target reported
in its ``/info`` at the step's end, and B, the members one replica's byte budget holds (its ``memory_budget_bytes``
over the mean size of the members it held). :func:`hit_ratio_at` is then the share of requests whose member is among
the k × B hottest: what k replicas that each hold B different members serve warm, at best. Pure Python (the
load-test image and ``plan`` both import it).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

MIX_RE = re.compile(r"^(?:uniform|zipf:(?P<s>[0-9]+(?:\.[0-9]+)?))$")
ROUTINGS = ("model-blind", "model-aware")


def mix_weights(label: str, n: int) -> list[float]:
    """Unnormalised shares of the members of rank 1..n (hottest first) under ``uniform`` or ``zipf:S``."""
    m = MIX_RE.match(label)
    if m is None:
        raise ValueError(f"{label!r} is not a model mix (uniform or zipf:S)")
    if m["s"] is None:
        return [1.0] * n
    s = float(m["s"])
    return [1.0 / (k ** s) for k in range(1, n + 1)]


def hit_curve(label: str, n: int) -> list[float]:
    """The mix's popularity curve: entry i is the share of requests whose member is among the i + 1 hottest."""
    w = mix_weights(label, n)
    total = math.fsum(w)
    return [min(1.0, x / total) for x in itertools.accumulate(w)]


def hit_ratio_at(replicas: int, *, members_per_budget: int, curve: Sequence[float]) -> float:
    """Share of requests whose member is among the ``replicas × members_per_budget`` hottest (``curve`` from
    :func:`hit_curve`): what that many replicas, each holding B members none of the others holds, serve warm."""
    held = min(len(curve), replicas * members_per_budget)
    return curve[held - 1] if held > 0 else 0.0


def _whole(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def step_working_set(info: Mapping[str, Any] | None, *, mix: str, members: int) -> dict[str, Any]:
    """What a family step records for ``plan``: the mix over ``members`` ids, and from the target's ``/info`` at the
    step's end (None: it could not be read) its routing, replicas and the members one replica's budget holds. A
    figure the target did not report is None (an older target reports no routing)."""
    info = info or {}
    routing = info.get("routing") if info.get("routing") in ROUTINGS else None
    replicas = info.get("replicas")
    running = _whole(replicas.get("running")) if isinstance(replicas, Mapping) else None
    budget = _whole(info.get("memory_budget_bytes"))
    held = [h for h in (info.get("held") or []) if isinstance(h, Mapping) and _whole(h.get("bytes"))]
    member_bytes = round(sum(int(h["bytes"]) for h in held) / len(held)) if held else None
    per_budget = budget // member_bytes if budget and member_bytes else None
    return {"mix": mix, "members": members, "routing": routing, "replicas": running or None,
            "memory_budget_bytes": budget, "held_members": len(held) if info else None, "member_bytes": member_bytes,
            "members_per_budget": per_budget or None}

"""Verify a model family: a seeded sample of its members (and any named), each against an fp32 reference of its own
weights, as the family's index names them.

A family serves many members behind one endpoint; one member's answers say nothing of another's. So each checked
member gets the whole probe set, sent with its id in Serve's model-id header, and compared with the reference computed
from that member's published revision (``{family prefix}/members/{id}/{revision}``, the digest the index names); a
replica that answered with another member's weights disagrees there. The sample is drawn from the ids of the family's
index with ``seed``, so a run can be repeated exactly.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eks_inference.artifacts.family_index import member_prefix
from eks_inference.storage import join
from eks_inference.verify.check import Verdict, VerifyError, _message, _request, base_url, verify_target
from eks_inference.verify.compare import Tolerances


def family_members(url: str, *, timeout_s: float) -> tuple[str, dict[str, Any]]:
    """(the family's repository prefix, ``{id: {revision, digest, bytes}}``) from ``URL/info`` and ``URL/models``;
    VerifyError when the target is not a family."""
    status, raw = _request(f"{url}/info", None, timeout_s)
    info = json.loads(raw) if status == 200 else {}
    if not info.get("family"):
        raise VerifyError(f"{url} is not a model family (its /info says no family); drop --model-id and --sample")
    status, raw = _request(f"{url}/models", None, timeout_s)
    if status != 200:
        raise VerifyError(f"{url}/models answered HTTP {status} ({_message(raw)}); the family's index cannot be read")
    return str(info["model_uri"]), dict(json.loads(raw).get("members") or {})


def sample_ids(members: Sequence[str], *, sample: int, named: Sequence[str] = (), seed: int = 0) -> list[str]:
    """The named ids, then ``sample`` more drawn from the rest with ``seed`` (sorted first, so the draw does not depend
    on the index's order)."""
    rest = sorted(set(members) - set(named))
    rng = random.Random(f"verify-family:{seed}")
    return list(named) + rng.sample(rest, min(sample, len(rest)))


def verify_family(url: str, *, model_ids: Sequence[str] = (), sample: int = 5, seed: int = 0,
                  reference_mode: str = "auto", cache_dir: str | Path = ".eks-inference/verify-cache",
                  endpoint_url: str | None = None, timeout_s: float = 60.0, tolerances: Tolerances | None = None,
                  say: Callable[[str], None] = lambda _m: None) -> list[tuple[str, Verdict]]:
    """(model id, verdict) for each member checked. Raises :class:`VerifyError` for a named id that is no member."""
    url = base_url(url)
    prefix, members = family_members(url, timeout_s=timeout_s)
    unknown = [m for m in model_ids if m not in members]
    if unknown:
        raise VerifyError(f"--model-id {', '.join(unknown)}: not a member of the family at {url} (its index names "
                          f"{len(members)}); publish it with eks-inference publish --family")
    if not members:
        raise VerifyError(f"the family at {url} has no members yet; publish one with eks-inference publish --family")
    out = []
    for mid in sample_ids(list(members), sample=sample, named=model_ids, seed=seed):
        m = members[mid]
        source = join(prefix, member_prefix(mid, m["revision"]))
        say(f"member {mid}: its own reference from {source}")
        out.append((mid, verify_target(url, source=source, reference_mode=reference_mode, cache_dir=cache_dir,
                                       endpoint_url=endpoint_url, timeout_s=timeout_s, tolerances=tolerances,
                                       say=say, model=(mid, str(m["digest"])))))
    return out

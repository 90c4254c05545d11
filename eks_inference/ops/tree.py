"""Structural diff of two JSON-like documents into leaf changes, each with a readable path.

Lists of objects that carry a unique ``name`` (containers, env, worker groups, Serve applications) are
matched by that name rather than by position, so inserting one entry shows one addition instead of every
later entry "changing": ``workerGroupSpecs[graviton].maxReplicas`` reads better than ``[0].maxReplicas``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


MISSING: Any = _Missing()
"""Stands for a key or list entry that exists on one side only."""


@dataclass(frozen=True)
class Key:
    """A list entry matched by its name (``containers[ray]``)."""

    name: str


Segment = str | int | Key
Path = tuple[Segment, ...]

_LIST_KEYS = ("name", "groupName", "Key", "key", "Sid", "Id")
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Change:
    path: Path
    old: Any
    new: Any

    @property
    def text_path(self) -> str:
        return render_path(self.path)


def render_path(path: Path) -> str:
    out = ""
    for seg in path:
        if isinstance(seg, Key):
            out += f"[{seg.name}]"
        elif isinstance(seg, int):
            out += f"[{seg}]"
        elif _PLAIN.match(seg):
            out += ("." if out else "") + seg
        else:
            out += "[" + json.dumps(seg) + "]"
    return out


def render_value(value: Any, limit: int = 160) -> str:
    if value is MISSING:
        return "(absent)"
    if isinstance(value, str):
        text = value if value and not any(c.isspace() for c in value) and value not in ("null", "true", "false") \
            else json.dumps(value)
    else:
        text = json.dumps(value, separators=(", ", ": "), sort_keys=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _list_key(old: list[Any], new: list[Any]) -> str | None:
    items = old + new
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for key in _LIST_KEYS:
        if (all(isinstance(i.get(key), str) for i in items) and len({i[key] for i in old}) == len(old)
                and len({i[key] for i in new}) == len(new)):
            return key
    return None


def _scalar(v: Any) -> bool:
    return not isinstance(v, dict | list)


def diff(old: Any, new: Any, path: Path = ()) -> list[Change]:
    """Leaf changes from ``old`` to ``new``; a key or entry present on one side shows as ``MISSING`` on the other."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[Change] = []
        for k in [*old, *(k for k in new if k not in old)]:
            out += diff(old.get(k, MISSING), new.get(k, MISSING), (*path, k))
        return out
    if isinstance(old, list) and isinstance(new, list):
        key = _list_key(old, new)
        if key:
            before = {i[key]: i for i in old}
            after = {i[key]: i for i in new}
            out = []
            for name in [*before, *(n for n in after if n not in before)]:
                out += diff(before.get(name, MISSING), after.get(name, MISSING), (*path, Key(name)))
            return out
        if all(_scalar(v) for v in old + new) and len(old) != len(new):
            return [Change(path, old, new)]
        out = []
        for i in range(max(len(old), len(new))):
            out += diff(old[i] if i < len(old) else MISSING, new[i] if i < len(new) else MISSING, (*path, i))
        return out
    return [Change(path, old, new)]


def starts_with(path: Path, prefix: Path) -> bool:
    return len(path) >= len(prefix) and path[: len(prefix)] == prefix

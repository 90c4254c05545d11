"""Which held members a family's replica evicts to stay within its memory budget: bytes, not a count.

Ray Serve's ``@serve.multiplexed`` keeps a replica's models in an LRU bounded by a *count*
(``max_num_models_per_replica``; ``ray/serve/multiplex.py``, ``_ModelMultiplexWrapper.load_model``): members of one
family differ in size (a base and a large variant, a classifier with many labels), and what a replica has is memory.
The family's replica runs Serve's LRU without a count (``-1``) and, before each load, evicts least recently used
members through Serve's own ``unload_model_lru`` until the newcomer fits (:func:`evictions`), so Serve still knows
which members each replica holds and routes to them. Pure logic here; the replica applies it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class TooLarge(ValueError):
    """A member needs more than the whole budget: no eviction makes room for it."""


def evictions(held: Sequence[tuple[str, int]], incoming: int, budget: int) -> int:
    """How many of ``held`` (id, bytes) pairs, least recently used first, must go so that ``incoming`` more bytes fit
    within ``budget``."""
    if incoming > budget:
        raise TooLarge(f"needs {incoming} bytes, more than the replica's whole memory budget of {budget} bytes")
    total = sum(b for _, b in held) + incoming
    n = 0
    while total > budget and n < len(held):
        total -= held[n][1]
        n += 1
    return n


def over_budget(held: Sequence[tuple[str, int]], budget: int) -> int:
    """How many least recently used members to drop after a load whose measured size exceeded its estimate; the
    most recent (just loaded) one always stays."""
    total, n = sum(b for _, b in held), 0
    while total > budget and n < len(held) - 1:
        total -= held[n][1]
        n += 1
    return n


def tensor_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of distinct tensors (shared storage counted once)."""
    seen: set[int] = set()
    total = 0
    for t in tensors:
        try:
            ptr = int(t.data_ptr())
        except Exception:
            continue
        if ptr in seen:
            continue
        seen.add(ptr)
        total += int(t.numel()) * int(t.element_size())
    return total


def graph_bytes(graphs: Iterable[Any]) -> int:
    """In-memory bytes of loaded TorchScript graphs' parameters and buffers; 0 where they expose none (a compiled
    Neuron graph keeps its weights on the device)."""
    tensors: list[Any] = []
    for g in graphs:
        for name in ("parameters", "buffers"):
            fn = getattr(g, name, None)
            if callable(fn):
                try:
                    tensors.extend(fn())
                except Exception:
                    continue
    return tensor_bytes(tensors)

"""Shape buckets: the fixed (batch, sequence) shapes an artifact is compiled for.

Neuron executes only the shapes it was compiled for, so every forward is padded *up* to the nearest
bucket; CPU and CUDA artifacts accept any shape, but padding to a few buckets keeps the set of shapes
small (warm kernels, predictable latency) and lets one cache key describe an artifact on every backend.
Pure functions only: the serving engine, the compiler and the tests share them.
"""

from __future__ import annotations

from collections.abc import Sequence

MIN_SEQ_BUCKET = 16
"""Shortest sequence bucket on cpu/cuda; below it padding costs less than another shape."""


def pick_bucket(n: int, buckets: Sequence[int]) -> int:
    """Smallest bucket that holds ``n``; raises ValueError when ``n`` exceeds the largest."""
    if n < 1:
        raise ValueError(f"size {n} is not positive")
    for b in buckets:
        if b >= n:
            return b
    raise ValueError(f"size {n} exceeds the largest bucket {buckets[-1] if buckets else None}")


def seq_buckets_for(backend: str, max_seq_length: int) -> tuple[int, ...]:
    """Sequence buckets per backend.

    ``neuron`` compiles one graph per shape and compilation takes minutes, so it gets one sequence
    bucket (``max_seq_length``). ``cpu``/``cuda`` get powers of two from 16 up to ``max_seq_length``:
    short texts then cost short forwards.
    """
    if max_seq_length < 1:
        raise ValueError(f"max_seq_length {max_seq_length} is not positive")
    if backend == "neuron":
        return (max_seq_length,)
    out: list[int] = []
    s = MIN_SEQ_BUCKET
    while s < max_seq_length:
        out.append(s)
        s *= 2
    out.append(max_seq_length)
    return tuple(out)


def split_sizes(n: int, max_size: int) -> list[int]:
    """Split ``n`` items into consecutive chunks of at most ``max_size`` (all full but the last)."""
    if max_size < 1:
        raise ValueError(f"max_size {max_size} is not positive")
    full, rest = divmod(n, max_size)
    return [max_size] * full + ([rest] if rest else [])


def padded_shape(batch: int, longest: int, batch_buckets: Sequence[int],
                 seq_buckets: Sequence[int]) -> tuple[int, int]:
    """(batch bucket, sequence bucket) a forward of ``batch`` rows whose longest row is ``longest`` runs at."""
    return pick_bucket(batch, batch_buckets), pick_bucket(max(longest, 1), seq_buckets)


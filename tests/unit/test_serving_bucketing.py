"""Shape buckets: every forward is padded up to a compiled (batch, sequence) shape."""

from __future__ import annotations

import pytest

from eks_inference.config import batch_buckets_up_to
from eks_inference.runtime.bucketing import padded_shape, pick_bucket, seq_buckets_for, split_sizes


@pytest.mark.parametrize(("n", "expected"), [(1, 1), (2, 2), (3, 4), (5, 8), (17, 32), (32, 32)])
def test_pick_bucket_pads_up_to_the_nearest_bucket(n: int, expected: int) -> None:
    assert pick_bucket(n, (1, 2, 4, 8, 16, 32)) == expected


def test_pick_bucket_refuses_sizes_beyond_the_largest_or_below_one() -> None:
    with pytest.raises(ValueError, match="exceeds the largest bucket 32"):
        pick_bucket(33, (1, 32))
    with pytest.raises(ValueError, match="not positive"):
        pick_bucket(0, (1, 32))


def test_neuron_gets_one_fixed_sequence_length_cpu_and_cuda_get_powers_of_two() -> None:
    assert seq_buckets_for("neuron", 128) == (128,)
    assert seq_buckets_for("cpu", 128) == (16, 32, 64, 128)
    assert seq_buckets_for("cuda", 100) == (16, 32, 64, 100)
    assert seq_buckets_for("cpu", 8) == (8,)


def test_batch_buckets_match_the_config_default_rule() -> None:
    from eks_inference.config import ServingSpec

    for n in (1, 3, 8, 24, 32):
        assert batch_buckets_up_to(n) == ServingSpec(max_batch_size=n).batch_buckets


@pytest.mark.parametrize(("n", "size", "expected"), [(70, 32, [32, 32, 6]), (32, 32, [32]), (1, 8, [1]),
                                                     (0, 8, [])])
def test_split_sizes(n: int, size: int, expected: list[int]) -> None:
    assert split_sizes(n, size) == expected
    assert sum(split_sizes(n, size)) == n


def test_padded_shape_uses_the_longest_row() -> None:
    assert padded_shape(3, 20, (1, 2, 4), (16, 32, 64)) == (4, 32)
    assert padded_shape(1, 0, (1,), (16,)) == (1, 16)

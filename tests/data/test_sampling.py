"""LengthGroupedSampler: a fresh permutation each epoch, grouped by length, reproducible."""

from __future__ import annotations

import random

import pytest

from distill.data import LengthGroupedSampler


def _lengths(n: int = 1000, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, 128) for _ in range(n)]


def _padded_tokens(order: list[int], lengths: list[int], batch_size: int) -> int:
    """Token slots a batch-max-padded run over ``order`` uses."""
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)


def test_each_epoch_is_a_permutation_of_all_indices() -> None:
    lengths = _lengths(1003)
    sampler = LengthGroupedSampler(lengths, batch_size=16)
    assert len(sampler) == 1003
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert sorted(sampler) == list(range(1003))


def test_order_changes_across_epochs_and_is_reproducible_for_a_seed() -> None:
    lengths = _lengths()
    first = LengthGroupedSampler(lengths, batch_size=16, seed=7)
    second = LengthGroupedSampler(lengths, batch_size=16, seed=7)
    epoch0 = list(first)
    assert epoch0 == list(second)
    assert epoch0 == list(first)  # iterating again without set_epoch repeats the epoch
    first.set_epoch(1)
    second.set_epoch(1)
    epoch1 = list(first)
    assert epoch1 != epoch0
    assert epoch1 == list(second)
    assert list(LengthGroupedSampler(lengths, batch_size=16, seed=8)) != epoch0


def test_each_mega_batch_is_sorted_longest_first() -> None:
    lengths = _lengths(1000)
    sampler = LengthGroupedSampler(lengths, batch_size=10, mega_batch_mult=5)
    assert sampler.mega_batch_size == 50
    order = list(sampler)
    for start in range(0, len(order), 50):
        chunk = [lengths[i] for i in order[start : start + 50]]
        assert chunk == sorted(chunk, reverse=True)
    # ...but the stream as a whole is not sorted: mega-batches are random subsets.
    assert [lengths[i] for i in order] != sorted(lengths, reverse=True)


def test_small_datasets_still_get_several_mega_batches() -> None:
    sampler = LengthGroupedSampler(_lengths(200), batch_size=10, mega_batch_mult=50)
    # 20 batches: capped at a quarter of them, so 4 mega-batches of 5 batches.
    assert sampler.mega_batch_size == 50
    assert LengthGroupedSampler(_lengths(5), batch_size=10).mega_batch_size == 10


def test_grouping_pads_much_less_than_random_order() -> None:
    lengths = _lengths(2000)
    sampler = LengthGroupedSampler(lengths, batch_size=32, seed=0)
    random_order = list(range(len(lengths)))
    random.Random(0).shuffle(random_order)
    grouped = _padded_tokens(list(sampler), lengths, 32)
    shuffled = _padded_tokens(random_order, lengths, 32)
    assert sum(lengths) <= grouped < 0.8 * shuffled


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 4, "mega_batch_mult": 0}, "mega_batch_mult"),
        ({"batch_size": 4, "lengths": [3, -1]}, "lengths"),
    ],
)
def test_rejects_invalid_arguments(kwargs: dict, match: str) -> None:
    kwargs = {"lengths": [1, 2, 3], **kwargs}
    with pytest.raises(ValueError, match=match):
        LengthGroupedSampler(**kwargs)

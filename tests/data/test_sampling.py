"""Training samplers: a fresh order each epoch, grouped by length, reproducible, sharded by rank in whole batches."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from torch.utils.data import DistributedSampler

from distill.data import LengthGroupedSampler
from distill.data.sampling import RankShardedSampler, TransferMixSampler


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


# ---------------------------------------------------------------------- sharding by rank (DDP)


def _rank_batches(sampler_for_rank, world_size: int, batch_size: int) -> list[list[list[int]]]:
    """Each rank's batches, as the ``DataLoader`` (same ``batch_size``) cuts its index stream."""
    per_rank = []
    for rank in range(world_size):
        sampler = sampler_for_rank(rank)
        order = list(sampler)
        assert len(order) == len(sampler)
        per_rank.append([order[i : i + batch_size] for i in range(0, len(order), batch_size)])
    return per_rank


SHARDED = {
    "grouped": lambda lengths, b, world, rank, seed=0: LengthGroupedSampler(
        lengths, b, seed=seed, num_replicas=world, rank=rank
    ),
    "shuffled": lambda lengths, b, world, rank, seed=0: RankShardedSampler(
        len(lengths), b, seed=seed, num_replicas=world, rank=rank
    ),
    "file_order": lambda lengths, b, world, rank, seed=0: RankShardedSampler(
        len(lengths), b, seed=seed, shuffle=False, num_replicas=world, rank=rank
    ),
}


def test_samplers_are_distributed_samplers_so_lightning_does_not_rewrap_them() -> None:
    # Lightning wraps a training sampler unless it is a DistributedSampler
    # (DataConnector._requires_distributed_sampler); these shard themselves.
    for make in SHARDED.values():
        assert isinstance(make([3, 1, 2], 2, 1, 0), DistributedSampler)
    assert isinstance(TransferMixSampler([1], [1], 1, 1), DistributedSampler)


@pytest.mark.parametrize("kind", SHARDED)
@pytest.mark.parametrize(("n", "world_size"), [(1000, 2), (1003, 2), (1003, 3), (5, 4)])
def test_ranks_get_whole_equal_batches_covering_the_epoch_once(kind: str, n: int, world_size: int) -> None:
    lengths, batch_size = _lengths(n), 16
    batches = _rank_batches(lambda r: SHARDED[kind](lengths, batch_size, world_size, r), world_size, batch_size)
    counts = {len(rank_batches) for rank_batches in batches}
    assert counts == {-(-n // (batch_size * world_size))}  # the same number of batches on every rank
    assert all(len(batch) == batch_size for rank_batches in batches for batch in rank_batches)  # all full
    seen = Counter(i for rank_batches in batches for batch in rank_batches for i in batch)
    assert set(seen) == set(range(n))  # every example at least once...
    # ...and the documented remainder only: the short last global batch is filled up with the
    # epoch's first indices, fewer than one global batch of repeats.
    repeats = sum(seen.values()) - n
    assert repeats == (-n) % (batch_size * world_size) < batch_size * world_size


@pytest.mark.parametrize("kind", SHARDED)
def test_step_k_trains_on_batch_k_of_one_process_at_the_global_batch_size(kind: str) -> None:
    lengths, batch_size, world_size = _lengths(960), 8, 4
    one_process = list(SHARDED[kind](lengths, batch_size * world_size, 1, 0, seed=5))
    batches = _rank_batches(lambda r: SHARDED[kind](lengths, batch_size, world_size, r, seed=5), world_size, batch_size)
    steps = [sum((batches[r][k] for r in range(world_size)), []) for k in range(len(batches[0]))]
    assert sum(steps, []) == one_process


def test_one_process_order_is_the_unsharded_order() -> None:
    lengths = _lengths(1003)
    assert list(LengthGroupedSampler(lengths, 16, num_replicas=1, rank=0)) == list(LengthGroupedSampler(lengths, 16))
    assert len(LengthGroupedSampler(lengths, 16)) == 1003  # no process group: one process, short last batch kept


def _padding_per_rank(sampler_for_rank, lengths: list[int], world_size: int, batch_size: int) -> int:
    return sum(
        _padded_tokens(list(sampler_for_rank(rank)), lengths, batch_size) for rank in range(world_size)
    )


def test_each_ranks_batches_are_length_grouped() -> None:
    lengths, batch_size, world_size = _lengths(2000), 16, 2
    grouped = _padding_per_rank(lambda r: LengthGroupedSampler(lengths, batch_size, num_replicas=2, rank=r),
                                lengths, world_size, batch_size)
    shuffled = _padding_per_rank(lambda r: RankShardedSampler(len(lengths), batch_size, num_replicas=2, rank=r),
                                 lengths, world_size, batch_size)
    assert sum(lengths) <= grouped < 0.6 * shuffled
    for rank in range(world_size):  # each rank's batches come out of a length-sorted run
        order = list(LengthGroupedSampler(lengths, batch_size, num_replicas=2, rank=rank))
        for start in range(0, len(order) - batch_size, batch_size):
            batch = [lengths[i] for i in order[start : start + batch_size]]
            assert batch == sorted(batch, reverse=True)


@pytest.mark.parametrize("kind", ["grouped", "shuffled"])
def test_every_rank_gets_a_new_order_each_epoch_reproducibly(kind: str) -> None:
    lengths = _lengths(500)
    for rank in range(2):
        sampler, again = SHARDED[kind](lengths, 8, 2, rank), SHARDED[kind](lengths, 8, 2, rank)
        epoch0 = list(sampler)
        sampler.set_epoch(1)
        again.set_epoch(1)
        assert list(sampler) != epoch0
        assert list(sampler) == list(again)


def test_rank_and_world_size_come_from_the_process_group_when_it_is_initialised(monkeypatch) -> None:
    import torch.distributed as dist

    lengths = _lengths(100)
    sampler = LengthGroupedSampler(lengths, 8)  # built before the process group exists, as in Lightning
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    assert (sampler.num_replicas, sampler.rank) == (2, 1)
    assert list(sampler) == list(LengthGroupedSampler(lengths, 8, num_replicas=2, rank=1))


def test_rejects_a_rank_outside_the_world() -> None:
    with pytest.raises(ValueError, match="rank"):
        LengthGroupedSampler([1, 2], 1, num_replicas=2, rank=2)


@pytest.mark.parametrize("group_by_length", [True, False])
def test_transfer_mix_gives_every_rank_batches_with_the_configured_counts(group_by_length: bool) -> None:
    labeled, transfer = _lengths(300, seed=1), _lengths(1000, seed=2)
    lengths = labeled + transfer
    labeled_per_batch, transfer_per_batch, world_size = 4, 12, 2

    def mix(rank: int, world: int = world_size, l: int = labeled_per_batch, t: int = transfer_per_batch):
        return TransferMixSampler(labeled, transfer, l, t, group_by_length=group_by_length,
                                  num_replicas=world, rank=rank)

    batch_size = labeled_per_batch + transfer_per_batch
    batches = _rank_batches(mix, world_size, batch_size)
    assert len(batches[0]) == len(batches[1]) == -(-1000 // (transfer_per_batch * world_size))  # 42
    for rank_batches in batches:
        for batch in rank_batches:
            assert len(batch) == batch_size
            assert all(i < 300 for i in batch[:labeled_per_batch])
            assert all(i >= 300 for i in batch[labeled_per_batch:])
    # The larger pool (transfer) is seen once per epoch across the ranks, plus < one global batch.
    transfer_seen = Counter(i for rank_batches in batches for batch in rank_batches for i in batch[labeled_per_batch:])
    assert set(transfer_seen) == set(range(300, 1300)) and sum(transfer_seen.values()) - 1000 < 24
    # Step k on the two ranks is batch k of one process with twice the counts.
    one_process = list(mix(0, world=1, l=2 * labeled_per_batch, t=2 * transfer_per_batch))
    for k in range(len(batches[0])):
        global_batch = one_process[k * 2 * batch_size : (k + 1) * 2 * batch_size]
        step = batches[0][k] + batches[1][k]
        assert sorted(step) == sorted(global_batch)
    if group_by_length:  # each rank's transfer rows come from a length-sorted run: little padding
        def transfer_padding(rank_batches: list[list[int]]) -> int:
            return sum(len(b[labeled_per_batch:]) * max(lengths[i] for i in b[labeled_per_batch:]) for b in rank_batches)

        shuffled = _rank_batches(lambda r: TransferMixSampler(labeled, transfer, 4, 12, group_by_length=False,
                                                              num_replicas=2, rank=r), 2, batch_size)
        assert sum(map(transfer_padding, batches)) < 0.6 * sum(map(transfer_padding, shuffled))
    # A new order each epoch on every rank.
    for rank in range(world_size):
        sampler = mix(rank)
        epoch0 = list(sampler)
        sampler.set_epoch(1)
        assert list(sampler) != epoch0

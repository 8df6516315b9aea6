"""Length-grouped shuffling: random batches that waste little compute on padding.

With dynamic padding every batch is padded to its longest sequence. Under plain random order a
batch of short sentences usually holds one long outlier, so most of its token slots are padding:
compute and memory spent on nothing. Sorting the whole dataset by length would remove the
padding, but would also make the batch order (and batch composition) the same every epoch, which
hurts optimisation.

:class:`LengthGroupedSampler` keeps most of the randomness and most of the savings: each epoch it
shuffles all indices, cuts the shuffled order into *mega-batches* of ``mega_batch_mult`` batches,
and sorts each mega-batch by length, longest first. Consecutive ``batch_size`` slices of the stream
(the batches the ``DataLoader`` builds) then hold sequences of similar length, while which
examples share a mega-batch, and so a batch, changes from epoch to epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class LengthGroupedSampler(Sampler[int]):
    """Yields dataset indices shuffled per epoch, grouped so batches have similar lengths.

    The sampler yields single indices; the ``DataLoader`` (with the same ``batch_size``) groups
    them into batches. Every mega-batch holds a whole number of batches, so batch boundaries line
    up with mega-batch boundaries and only the very last batch can be short.

    The order depends only on ``seed + epoch``: call :meth:`set_epoch` at the start of each epoch
    (Lightning does, also through its distributed wrapper) to get a new order each epoch.

    Under DDP, Lightning wraps this sampler in a ``DistributedSamplerWrapper`` (without extra
    shuffling) that hands rank ``r`` every ``world_size``-th index of this stream, so each rank's
    batches are length-grouped too.

    Args:
        lengths: length (in tokens) of each example; index ``i`` is example ``i``.
        batch_size: the batch size the ``DataLoader`` uses.
        seed: base seed of the per-epoch shuffle.
        mega_batch_mult: batches per mega-batch, at most. Larger groups mean less padding but less
            randomness. It is capped at a quarter of the number of batches (and at least 1), so a
            small dataset still splits into several mega-batches whose content varies by epoch,
            instead of being one fully sorted block.

    Raises:
        ValueError: if ``batch_size`` or ``mega_batch_mult`` is below 1 or a length is negative.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        mega_batch_mult: int = 50,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"LengthGroupedSampler: batch_size must be >= 1, got {batch_size}.")
        if mega_batch_mult < 1:
            raise ValueError(f"LengthGroupedSampler: mega_batch_mult must be >= 1, got {mega_batch_mult}.")
        self.lengths = [int(length) for length in lengths]
        if any(length < 0 for length in self.lengths):
            raise ValueError("LengthGroupedSampler: lengths must be >= 0.")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.mega_batch_mult = int(mega_batch_mult)
        self.epoch = 0

    @property
    def mega_batch_size(self) -> int:
        """Examples per mega-batch after capping (a multiple of ``batch_size``)."""
        num_batches = len(self.lengths) // self.batch_size
        return self.batch_size * max(1, min(self.mega_batch_mult, num_batches // 4))

    def set_epoch(self, epoch: int) -> None:
        """Selects the shuffle of ``epoch`` (seeded with ``seed + epoch``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        size = self.mega_batch_size
        for start in range(0, len(order), size):
            # Stable sort: ties keep their shuffled order, so they still vary by epoch.
            mega_batch = sorted(order[start : start + size], key=self.lengths.__getitem__, reverse=True)
            yield from mega_batch


class TransferMixSampler(Sampler[int]):
    """Batch-sized windows of labeled indices followed by transfer-set indices.

    The data set is the labeled examples (indices ``0..L-1``) followed by the transfer examples
    (``L..L+U-1``). Each window of ``labeled_per_batch + transfer_per_batch`` indices, the
    ``DataLoader``'s batch, holds ``labeled_per_batch`` labeled then ``transfer_per_batch``
    transfer indices. Each pool is drawn from its own stream, shuffled (length-grouped if asked)
    and reshuffled whenever it runs out, so the smaller pool cycles while the larger one is
    traversed once per epoch: an epoch is ``max(ceil(L / labeled_per_batch), ceil(U /
    transfer_per_batch))`` batches, all full.

    Under DDP, Lightning's distributed wrapper hands each rank every ``world_size``-th index of
    this stream, so each rank's batches hold the same mix on average.

    Args:
        labeled_lengths: token count of each labeled example.
        transfer_lengths: token count of each transfer example.
        labeled_per_batch: labeled examples per batch (``data.batch_size``).
        transfer_per_batch: transfer examples per batch.
        seed: base seed; the order depends only on ``seed``, the epoch and the pool.
        shuffle: ``False`` walks each pool in order.
        group_by_length: order each pool with :class:`LengthGroupedSampler` (less padding).
    """

    def __init__(
        self,
        labeled_lengths: Sequence[int],
        transfer_lengths: Sequence[int],
        labeled_per_batch: int,
        transfer_per_batch: int,
        seed: int = 0,
        shuffle: bool = True,
        group_by_length: bool = True,
    ) -> None:
        if labeled_per_batch < 1 or transfer_per_batch < 1:
            raise ValueError(
                "TransferMixSampler: labeled_per_batch and transfer_per_batch must be >= 1, got "
                f"{labeled_per_batch} and {transfer_per_batch}."
            )
        if not labeled_lengths or not transfer_lengths:
            raise ValueError("TransferMixSampler: both the labeled and the transfer pool need examples.")
        self.labeled_lengths = list(labeled_lengths)
        self.transfer_lengths = list(transfer_lengths)
        self.labeled_per_batch = int(labeled_per_batch)
        self.transfer_per_batch = int(transfer_per_batch)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.group_by_length = group_by_length
        self.epoch = 0

    @property
    def num_batches(self) -> int:
        labeled = -(-len(self.labeled_lengths) // self.labeled_per_batch)
        transfer = -(-len(self.transfer_lengths) // self.transfer_per_batch)
        return max(labeled, transfer)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches * (self.labeled_per_batch + self.transfer_per_batch)

    def _stream(self, lengths: list[int], per_batch: int, pool: int) -> Iterator[int]:
        """Endless indices of one pool: one (re)shuffled pass after another."""
        cycle = 0
        while True:
            if not self.shuffle:
                yield from range(len(lengths))
                continue
            # One seed per (seed, pool, epoch, pass): orders differ across all of them.
            seed = ((self.seed * 1_000_003 + pool) * 1_000_003 + self.epoch) * 1_000_003 + cycle
            seed %= 2**63
            if self.group_by_length:
                yield from LengthGroupedSampler(lengths, per_batch, seed=seed)
            else:
                generator = torch.Generator()
                generator.manual_seed(seed)
                yield from torch.randperm(len(lengths), generator=generator).tolist()
            cycle += 1

    def __iter__(self) -> Iterator[int]:
        offset = len(self.labeled_lengths)
        labeled = self._stream(self.labeled_lengths, self.labeled_per_batch, pool=0)
        transfer = self._stream(self.transfer_lengths, self.transfer_per_batch, pool=1)
        for _ in range(self.num_batches):
            for _ in range(self.labeled_per_batch):
                yield next(labeled)
            for _ in range(self.transfer_per_batch):
                yield offset + next(transfer)

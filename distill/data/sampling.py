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

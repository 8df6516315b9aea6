"""Training orders that shard themselves across DDP ranks, in whole batches.

With dynamic padding every batch is padded to its longest sequence. Under plain random order a
batch of short sentences usually holds one long outlier, so most of its token slots are padding:
compute and memory spent on nothing. Sorting the whole dataset by length would remove the
padding, but would also make the batch order (and batch composition) the same every epoch, which
hurts optimisation.

:class:`LengthGroupedSampler` keeps most of the randomness and most of the savings: each epoch it
shuffles all indices, cuts the shuffled order into *mega-batches* of ``mega_batch_mult`` batches,
and sorts each mega-batch by length, longest first. Consecutive batch-sized slices of the stream
then hold sequences of similar length, while which examples share a mega-batch, and so a batch,
changes from epoch to epoch. :class:`TransferMixSampler` fills each batch with a fixed number of
labeled and of transfer-set examples.

**Why the samplers shard themselves.** Under DDP, Lightning 2.6 replaces a training sampler that is
not a ``DistributedSampler`` by ``DistributedSamplerWrapper(sampler, shuffle=True)``, which
re-permutes the sampler's whole stream before dealing it out: batches lose their length grouping
(on 2,000 SST-2 sentences, tokens per epoch padding included go from 31,200 grouped in one process
to 70,584 wrapped for two ranks, against 80,656 in random order; ``scripts/bench_ddp_padding.py``)
and the transfer mix of each batch is scrambled. These samplers are ``DistributedSampler``
subclasses, which Lightning leaves alone (``_requires_distributed_sampler`` in
``lightning/pytorch/trainer/connectors/data_connector.py``), and deal out whole batches instead:

- The epoch's order is built for the *global* batch, ``batch_size × world_size``: exactly the order
  one process with that batch size gets (same seed, same epoch). Global batch ``k`` is cut into
  ``world_size`` consecutive slices of ``batch_size``; rank ``r`` takes slice ``r``. So step ``k``
  of a DDP run trains on batch ``k`` of the one-process run, each rank's batch is a slice of a
  length-sorted run (length-grouped) and holds the configured labeled / transfer counts.
- Every rank gets the same number of batches, so no rank waits: with one process the last batch
  may be short (as always); with several, a short last global batch is filled up with the first
  indices of the epoch's order (as ``DistributedSampler`` pads) and, when grouping by length,
  sorted again. At most ``batch_size × world_size − 1`` examples are seen twice per epoch.
- Rank and world size come from ``torch.distributed`` when its process group is initialised at
  iteration time (Lightning creates the training loader after it sets the group up), else
  ``rank=0, world_size=1``; ``num_replicas`` / ``rank`` set them explicitly (tests, or a one-device
  loop such as the teacher's fine-tuning inside a DDP process).
- The order depends only on ``seed``, the epoch and the world size: Lightning calls
  :meth:`~RankShardedSampler.set_epoch` at the start of every epoch (``_set_sampler_epoch`` in
  ``lightning/fabric/utilities/data.py``), so each epoch gets a new order on every rank.

Validation loaders keep a plain ``SequentialSampler``, which Lightning shards as usual.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


def resolve_world(num_replicas: int | None = None, rank: int | None = None) -> tuple[int, int]:
    """``(world_size, rank)``: the explicit values, else the initialised process group's, else ``(1, 0)``."""
    initialised = dist.is_available() and dist.is_initialized()
    world_size = num_replicas if num_replicas is not None else (dist.get_world_size() if initialised else 1)
    rank = rank if rank is not None else (dist.get_rank() if initialised else 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"sampler: need world_size >= 1 and 0 <= rank < world_size, got {world_size} and {rank}.")
    return world_size, rank


class _RankAware(DistributedSampler):
    """Seed, epoch and rank handling shared by the samplers below.

    A ``DistributedSampler`` subclass only so that Lightning does not wrap it (see the module
    docstring). ``DistributedSampler.__init__`` is not called: it needs the dataset and reads the
    process group at construction, while these samplers read it when iterated; every method that
    reads its attributes is overridden here.
    """

    def __init__(self, seed: int, num_replicas: int | None, rank: int | None) -> None:
        self.seed = int(seed)
        self.epoch = 0
        #: Lightning's epoch minus the data's: 0, except after resuming from a checkpoint that
        #: Lightning counts as the end of an epoch the data had not finished (see ``data_epoch``).
        self.epoch_offset = 0
        self._num_replicas = num_replicas
        self._rank = rank
        self._skip = 0
        resolve_world(num_replicas, rank)  # explicit values are checked at once

    @property
    def num_replicas(self) -> int:  # type: ignore[override]
        return resolve_world(self._num_replicas, self._rank)[0]

    @property
    def rank(self) -> int:  # type: ignore[override]
        return resolve_world(self._num_replicas, self._rank)[1]

    def set_epoch(self, epoch: int) -> None:
        """Selects the order of ``epoch`` (Lightning calls this at the start of every epoch)."""
        self.epoch = int(epoch)

    @property
    def data_epoch(self) -> int:
        """The epoch whose order is drawn: Lightning's ``epoch`` less ``epoch_offset``.

        A checkpoint written when ``max_steps`` ends training mid-epoch is saved in
        ``on_train_epoch_end``, so Lightning resumes it as the *next* epoch with the batches done
        already counted; the data must still finish the interrupted epoch's order, and every later
        epoch is then one behind Lightning's count
        (:class:`~distill.data.resumable.ResumableLoader` sets the offset).
        """
        return self.epoch - self.epoch_offset

    def skip_next(self, count: int) -> None:
        """The next iteration starts ``count`` indices into this rank's stream of the epoch.

        How a resumed run continues mid-epoch (:class:`~distill.data.resumable.ResumableLoader`):
        the order depends only on the seed, the epoch and the world size, so dropping the first
        ``count`` indices gives exactly the rest of the interrupted epoch. Applies once.
        """
        self._skip = int(count)

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        return itertools.islice(self._indices(), skip, None)

    def _indices(self) -> Iterator[int]:
        raise NotImplementedError


class RankShardedSampler(_RankAware):
    """Plain shuffle (``shuffle=True``, seeded with ``seed + epoch``) or file order, in whole batches per rank.

    Yields this rank's indices; its consecutive ``batch_size`` indices are one of its batches (the
    ``DataLoader`` must use the same ``batch_size``). See the module docstring for the sharding.

    Args:
        num_examples: size of the dataset.
        batch_size: the per-rank batch size the ``DataLoader`` uses.
        seed: base seed of the per-epoch shuffle.
        shuffle: ``False`` keeps file order.
        num_replicas / rank: the world size and this process's rank; ``None`` reads them from
            ``torch.distributed`` at iteration time (``1`` / ``0`` without a process group).
    """

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"{type(self).__name__}: batch_size must be >= 1, got {batch_size}.")
        super().__init__(seed, num_replicas, rank)
        self.num_examples = int(num_examples)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle

    def _order(self, global_batch_size: int) -> list[int]:
        """The epoch's order of all indices, for batches of ``global_batch_size``."""
        if not self.shuffle:
            return list(range(self.num_examples))
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.data_epoch)
        return torch.randperm(self.num_examples, generator=generator).tolist()

    def _refill(self, batch: list[int]) -> list[int]:
        """A padded last global batch as it is used (length grouping sorts it)."""
        return batch

    def __len__(self) -> int:
        world_size = self.num_replicas
        if world_size == 1:
            return self.num_examples
        global_batch = self.batch_size * world_size
        return self.batch_size * -(-self.num_examples // global_batch)

    def _indices(self) -> Iterator[int]:
        world_size, rank = resolve_world(self._num_replicas, self._rank)
        global_batch = self.batch_size * world_size
        order = self._order(global_batch)
        if world_size == 1:
            yield from order
            return
        short = len(order) % global_batch
        if short:
            missing = global_batch - short
            fill = (order * (missing // len(order) + 1))[:missing]  # wraps, as DistributedSampler pads
            order = order[: len(order) - short] + self._refill(order[len(order) - short :] + fill)
        for start in range(0, len(order), global_batch):
            first = start + rank * self.batch_size
            yield from order[first : first + self.batch_size]


class LengthGroupedSampler(RankShardedSampler):
    """Indices shuffled per epoch, grouped so batches have similar lengths, in whole batches per rank.

    Each mega-batch holds a whole number of global batches, so batch boundaries line up with
    mega-batch boundaries and only the last global batch can be short; each rank's batch is a
    slice of a length-sorted run. The order depends only on ``seed + epoch`` and the world size.

    Args:
        lengths: length (in tokens) of each example; index ``i`` is example ``i``.
        batch_size: the per-rank batch size the ``DataLoader`` uses.
        seed: base seed of the per-epoch shuffle.
        mega_batch_mult: global batches per mega-batch, at most. Larger groups mean less padding
            but less randomness. It is capped at a quarter of the number of global batches (and
            at least 1), so a small dataset still splits into several mega-batches whose content
            varies by epoch, instead of being one fully sorted block.
        num_replicas / rank: as in :class:`RankShardedSampler`.

    Raises:
        ValueError: if ``batch_size`` or ``mega_batch_mult`` is below 1 or a length is negative.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        mega_batch_mult: int = 50,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if mega_batch_mult < 1:
            raise ValueError(f"LengthGroupedSampler: mega_batch_mult must be >= 1, got {mega_batch_mult}.")
        super().__init__(len(lengths), batch_size, seed, shuffle=True, num_replicas=num_replicas, rank=rank)
        self.lengths = [int(length) for length in lengths]
        if any(length < 0 for length in self.lengths):
            raise ValueError("LengthGroupedSampler: lengths must be >= 0.")
        self.mega_batch_mult = int(mega_batch_mult)

    def mega_batch_size_for(self, global_batch_size: int) -> int:
        """Examples per mega-batch after capping (a multiple of ``global_batch_size``)."""
        num_batches = len(self.lengths) // global_batch_size
        return global_batch_size * max(1, min(self.mega_batch_mult, num_batches // 4))

    @property
    def mega_batch_size(self) -> int:
        """Examples per mega-batch in the current world (one process: a multiple of ``batch_size``)."""
        return self.mega_batch_size_for(self.batch_size * self.num_replicas)

    def _order(self, global_batch_size: int) -> list[int]:
        order = super()._order(global_batch_size)
        size = self.mega_batch_size_for(global_batch_size)
        grouped: list[int] = []
        for start in range(0, len(order), size):
            # Stable sort: ties keep their shuffled order, so they still vary by epoch.
            grouped += sorted(order[start : start + size], key=self.lengths.__getitem__, reverse=True)
        return grouped

    def _refill(self, batch: list[int]) -> list[int]:
        return sorted(batch, key=self.lengths.__getitem__, reverse=True)


class TransferMixSampler(_RankAware):
    """Batches of ``labeled_per_batch`` labeled then ``transfer_per_batch`` transfer indices, per rank.

    The data set is the labeled examples (indices ``0..L-1``) followed by the transfer examples
    (``L..L+U-1``). Each pool is drawn from its own stream, shuffled (length-grouped if asked)
    and reshuffled whenever it runs out, so the smaller pool cycles while the larger one is
    traversed once per epoch. A global batch takes ``labeled_per_batch × world_size`` labeled and
    ``transfer_per_batch × world_size`` transfer indices; rank ``r`` gets the ``r``-th slice of each
    (one process: all of it), so every rank's batch holds exactly the configured counts, each
    slice cut from a length-sorted run. An epoch is ``max(ceil(L / (labeled_per_batch ×
    world_size)), ceil(U / (transfer_per_batch × world_size)))`` batches on every rank, all full.

    Args:
        labeled_lengths: token count of each labeled example.
        transfer_lengths: token count of each transfer example.
        labeled_per_batch: labeled examples per batch and rank (``data.batch_size``).
        transfer_per_batch: transfer examples per batch and rank.
        seed: base seed; the order depends only on ``seed``, the epoch, the pool and the world size.
        shuffle: ``False`` walks each pool in order.
        group_by_length: order each pool with :class:`LengthGroupedSampler` (less padding).
        num_replicas / rank: as in :class:`RankShardedSampler`.
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
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if labeled_per_batch < 1 or transfer_per_batch < 1:
            raise ValueError(
                "TransferMixSampler: labeled_per_batch and transfer_per_batch must be >= 1, got "
                f"{labeled_per_batch} and {transfer_per_batch}."
            )
        if not labeled_lengths or not transfer_lengths:
            raise ValueError("TransferMixSampler: both the labeled and the transfer pool need examples.")
        super().__init__(seed, num_replicas, rank)
        self.labeled_lengths = list(labeled_lengths)
        self.transfer_lengths = list(transfer_lengths)
        self.labeled_per_batch = int(labeled_per_batch)
        self.transfer_per_batch = int(transfer_per_batch)
        self.shuffle = shuffle
        self.group_by_length = group_by_length

    def num_batches_for(self, world_size: int) -> int:
        """Batches per epoch on each rank of a world of ``world_size``."""
        labeled = -(-len(self.labeled_lengths) // (self.labeled_per_batch * world_size))
        transfer = -(-len(self.transfer_lengths) // (self.transfer_per_batch * world_size))
        return max(labeled, transfer)

    @property
    def num_batches(self) -> int:
        """Batches per epoch on each rank of the current world."""
        return self.num_batches_for(self.num_replicas)

    def __len__(self) -> int:
        return self.num_batches * (self.labeled_per_batch + self.transfer_per_batch)

    def _stream(self, lengths: list[int], per_global_batch: int, pool: int) -> Iterator[int]:
        """Endless indices of one pool: one (re)shuffled pass after another."""
        cycle = 0
        while True:
            if not self.shuffle:
                yield from range(len(lengths))
                continue
            # One seed per (seed, pool, epoch, pass): orders differ across all of them.
            seed = ((self.seed * 1_000_003 + pool) * 1_000_003 + self.data_epoch) * 1_000_003 + cycle
            seed %= 2**63
            if self.group_by_length:
                # One whole pass, not sharded: this sampler slices the global batches itself.
                yield from LengthGroupedSampler(lengths, per_global_batch, seed=seed, num_replicas=1, rank=0)
            else:
                generator = torch.Generator()
                generator.manual_seed(seed)
                yield from torch.randperm(len(lengths), generator=generator).tolist()
            cycle += 1

    def _indices(self) -> Iterator[int]:
        world_size, rank = resolve_world(self._num_replicas, self._rank)
        labeled_count, transfer_count = self.labeled_per_batch, self.transfer_per_batch
        offset = len(self.labeled_lengths)
        labeled = self._stream(self.labeled_lengths, labeled_count * world_size, pool=0)
        transfer = self._stream(self.transfer_lengths, transfer_count * world_size, pool=1)
        for _ in range(self.num_batches_for(world_size)):
            labeled_batch = [next(labeled) for _ in range(labeled_count * world_size)]
            transfer_batch = [next(transfer) for _ in range(transfer_count * world_size)]
            yield from labeled_batch[rank * labeled_count : (rank + 1) * labeled_count]
            for index in transfer_batch[rank * transfer_count : (rank + 1) * transfer_count]:
                yield offset + index


__all__ = ["LengthGroupedSampler", "RankShardedSampler", "TransferMixSampler", "resolve_world"]

"""A training ``DataLoader`` that a run stopped mid-epoch continues exactly where it stopped.

**What Lightning 2.6 does.** On saving a checkpoint, the fit loop stores ``state_dict()`` of every
training loader that has both ``state_dict`` and ``load_state_dict`` (``FitLoop.on_save_checkpoint``
and ``CombinedLoader._state_dicts`` in ``lightning/pytorch/loops/fit_loop.py`` and
``utilities/combined_loader.py``); on resuming, it hands the state back to the new loader through
``load_state_dict`` before it first iterates it (``FitLoop._load_combined_loader_states``). It does
not skip batches itself: it counts the batches already done in the epoch as fetched
(``data_fetcher.fetched += batch_progress.current.ready`` in ``training_epoch_loop.py``) and expects
the loader to yield only the rest. A loader without the two methods restarts the epoch's order
(and Lightning warns "not resumable"). With a loader of known length Lightning does not prefetch
(``_PrefetchDataFetcher.__iter__``), so the batches this loader has yielded when the state is
saved are exactly the batches trained on.

**What this loader saves.** ``{"epoch", "batches"}``: the epoch and how many batches of it were
yielded. Nothing else is needed because everything random in a batch is a function of the seed,
the epoch and the batch's position: the samplers' orders (:mod:`distill.data.sampling`) depend only
on the seed, the epoch and the world size, and ``batch_transform`` (the MLM masking) gets a
generator seeded by the seed, the epoch, the rank and the batch index. Resuming sets the epoch and
makes the sampler drop the indices of the batches already done
(:meth:`~distill.data.sampling.RankShardedSampler.skip_next`), so the collator never sees them.
A checkpoint saved after an epoch's last batch resumes at the start of the next epoch.

Lightning's epoch count and the data's can part: when ``max_steps`` stops training mid-epoch, the
checkpoint is written in ``on_train_epoch_end`` (``save_on_train_epoch_end``), and Lightning resumes
it as the *next* epoch, with the batches done counted as already fetched. The loader then finishes
the interrupted epoch's order (the remaining batches are exactly what Lightning expects) and
keeps the data one epoch behind Lightning's count from then on (the sampler's ``epoch_offset``),
so the batches are the uninterrupted run's; only ``current_epoch`` in logs reads one higher.

The masking runs in the main process, after the (worker-side) collation, so it is the same with
or without ``num_workers``. The loader draws its workers' base seed from its own generator, not
from the global torch RNG, so iterating it does not shift the dropout stream (which the module
saves and restores, :meth:`distill.module.DistillationModule.on_load_checkpoint`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

#: ``batch_transform(batch, generator) -> batch``: randomness drawn from ``generator`` only.
BatchTransform = Callable[[dict[str, torch.Tensor], torch.Generator], dict[str, torch.Tensor]]


def batch_seed(seed: int, epoch: int, rank: int, batch: int) -> int:
    """One seed per (seed, epoch, rank, batch): every batch of every epoch and rank its own stream."""
    value = seed
    for part in (epoch, rank, batch):
        value = (value * 1_000_003 + part) % 2**63
    return value


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over one of :mod:`distill.data.sampling`'s samplers, resumable mid-epoch.

    Args:
        dataset / batch_size / sampler / collate_fn / num_workers / persistent_workers /
            pin_memory: as for ``DataLoader``; ``sampler`` must have ``epoch``, ``rank`` and
            ``skip_next`` (the samplers of :mod:`distill.data.sampling`).
        seed: seed of ``batch_transform``'s generators and of the workers' base seed.
        batch_transform: applied to each collated batch in the main process with a generator
            seeded by :func:`batch_seed` (the MLM masking); ``None``: batches as collated.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        sampler,
        collate_fn: Callable,
        *,
        seed: int = 0,
        batch_transform: BatchTransform | None = None,
        num_workers: int = 0,
        persistent_workers: bool = False,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate_fn,
            num_workers=num_workers,
            persistent_workers=persistent_workers,
            pin_memory=pin_memory,
            generator=torch.Generator().manual_seed(int(seed)),
        )
        self.seed = int(seed)
        self.batch_transform = batch_transform
        self._epoch = 0
        self._yielded = 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches done), set by load_state_dict

    def __iter__(self) -> Iterator[Any]:
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        # A generator: runs at the first ``next``, after Lightning's ``set_epoch`` for the epoch.
        start = 0
        if self._resume is not None:
            saved_epoch, done = self._resume
            # An epoch the data had not finished continues; a finished one is followed by the next.
            epoch = saved_epoch if done < len(self) else saved_epoch + 1
            start = done if done < len(self) else 0
            self.sampler.epoch_offset = self.sampler.epoch - epoch
            self._resume = None
        epoch = self.sampler.data_epoch
        self.sampler.skip_next(start * self.batch_size)
        self._epoch, self._yielded = epoch, start
        rank = int(self.sampler.rank)
        for index, batch in enumerate(super().__iter__(), start):
            if self.batch_transform is not None:
                generator = torch.Generator().manual_seed(batch_seed(self.seed, epoch, rank, index))
                batch = self.batch_transform(batch, generator)
            self._yielded = index + 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Where the data stands: its epoch (``data_epoch``) and the batches of it already yielded
        (= trained on: Lightning does not prefetch from a loader of known length)."""
        return {"epoch": self._epoch, "batches": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue after ``state``: the rest of its epoch, or the next epoch if it was finished.

        Applied when the loader is first iterated, once Lightning has set the epoch it resumes in:
        the difference between the two becomes the sampler's ``epoch_offset``.
        """
        self._resume = (int(state["epoch"]), int(state["batches"]))


__all__ = ["BatchTransform", "ResumableLoader", "batch_seed"]

"""Tests for distill/data/resumable.py: a loader resumed from its state yields the uninterrupted batches."""

from __future__ import annotations

import torch

from distill.data.resumable import ResumableLoader
from distill.data.sampling import LengthGroupedSampler, TransferMixSampler


def loader(sampler_factory, batch_size):
    # The transform draws from its generator, as the MLM masking does: batches show the stream used.
    def mark(batch, generator):
        return (batch, torch.randint(1000, (1,), generator=generator).item())

    return ResumableLoader(list(range(100)), batch_size, sampler_factory(), collate_fn=list, seed=3, batch_transform=mark)


def epochs(data, lightning_epochs):
    batches = []
    for epoch in lightning_epochs:
        data.sampler.set_epoch(epoch)  # as Lightning does before each epoch
        batches += list(data)
    return batches


def grouped():
    return LengthGroupedSampler([i % 13 for i in range(40)], batch_size=4, seed=1, mega_batch_mult=2)


def mixed():
    return TransferMixSampler([i % 5 for i in range(12)], [i % 7 for i in range(30)], 2, 3, seed=1)


def test_resumed_mid_epoch_the_loader_yields_the_rest_of_the_epoch_then_the_next_epochs():
    for factory, batch_size in ((grouped, 4), (mixed, 5)):
        whole = epochs(loader(factory, batch_size), [0, 1, 2])
        first = loader(factory, batch_size)
        first.sampler.set_epoch(0)
        iterator = iter(first)
        done = [next(iterator) for _ in range(3)]
        state = first.state_dict()
        assert state == {"epoch": 0, "batches": 3}
        resumed = loader(factory, batch_size)
        resumed.load_state_dict(state)
        # A checkpoint saved after a batch (every_n_train_steps, preemption): same epoch continues.
        assert done + epochs(resumed, [0, 1, 2]) == whole


def test_a_checkpoint_lightning_counts_as_epoch_end_still_finishes_the_interrupted_epoch():
    # max_steps ending mid-epoch: the checkpoint is saved in on_train_epoch_end and Lightning
    # resumes in the next epoch; the data finishes epoch 0 first and stays one epoch behind.
    whole = epochs(loader(grouped, 4), [0, 1])
    first = loader(grouped, 4)
    iterator = iter(first)
    done = [next(iterator) for _ in range(3)]
    resumed = loader(grouped, 4)
    resumed.load_state_dict(first.state_dict())
    assert done + epochs(resumed, [1, 2]) == whole


def test_a_finished_epoch_resumes_at_the_start_of_the_next():
    whole = epochs(loader(grouped, 4), [0, 1])
    first = loader(grouped, 4)
    done = epochs(first, [0])
    resumed = loader(grouped, 4)
    resumed.load_state_dict(first.state_dict())
    assert done + epochs(resumed, [1]) == whole

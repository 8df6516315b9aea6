"""Tests for distill/callbacks/progress.py: the training bar counts what ends the training."""

import io

import lightning as L
import pytest
import rich
from lightning.pytorch.demos.boring_classes import BoringModel

from distill.callbacks import StepProgressBar
from distill.callbacks.progress import step_budget, train_description


@pytest.mark.parametrize(
    "max_steps, max_epochs, batches, accumulate, expected",
    [
        (300, 1, 500, 1, 300),  # the quickstart: max_steps ends the only epoch at batch 300
        (300, -1, 500, 1, 300),  # only max_steps set (Lightning's max_epochs=-1): the teacher fine-tune
        (300, None, 500, 1, 300),
        (300, 1, 100, 1, None),  # the epoch ends first, at step 100
        (300, 3, 100, 1, 300),  # three epochs make 300 steps: both end together
        (300, 1, 500, 2, None),  # 250 steps per epoch with accumulation 2: the epoch ends first
        (-1, 2, 500, 1, None),  # no step budget
        (300, 1, float("inf"), 1, 300),  # an iterable dataset: only the steps are known
    ],
)
def test_step_budget_is_max_steps_only_when_it_ends_the_training(max_steps, max_epochs, batches, accumulate, expected):
    assert step_budget(max_steps, max_epochs, batches, accumulate) == expected


def test_descriptions_name_the_stage_and_count_epochs_from_one():
    assert train_description("teacher fine-tune", 300, 0, -1) == "teacher fine-tune step"
    assert train_description("student", None, 0, 1) == "student epoch 1/1"
    assert train_description("student", None, 2, 3) == "student epoch 3/3"
    assert train_description("student", None, 4, -1) == "student epoch 5"


@pytest.fixture
def bar():
    """A bar rendering to a string (a terminal of 100 columns); rich's global console restored after."""
    yield StepProgressBar(label="student", console_kwargs={"file": io.StringIO(), "force_terminal": True, "width": 100})
    rich.reconfigure()


def _fit(bar, **trainer_args):
    trainer = L.Trainer(
        callbacks=[bar], logger=False, enable_checkpointing=False, enable_model_summary=False,
        limit_val_batches=0, accelerator="cpu", **trainer_args,
    )
    trainer.fit(BoringModel())
    task = bar.progress.tasks[bar.train_progress_bar_id]
    return trainer, task


def test_a_step_budget_ending_mid_epoch_fills_the_bar(bar):
    trainer, task = _fit(bar, max_steps=6, max_epochs=1, limit_train_batches=10)
    assert trainer.global_step == 6
    assert (task.completed, task.total) == (6, 6)  # Lightning's bar: 6/10, with time "remaining"
    assert task.description.endswith("student step")


def test_a_step_budget_over_several_epochs_counts_steps_not_batches_of_the_epoch(bar):
    trainer, task = _fit(bar, max_steps=6, limit_train_batches=4)  # max_epochs=-1, as in the teacher fine-tune
    assert trainer.global_step == 6  # in the second epoch of 4 batches
    assert (task.completed, task.total) == (6, 6)
    assert task.description.endswith("student step")  # Lightning's bar: "Epoch 1/-2", 2/2
    assert len(bar.progress.tasks) == 1  # one bar for the budget, not one per epoch


def test_an_epoch_budget_counts_batches_of_each_epoch(bar):
    _, task = _fit(bar, max_epochs=2, limit_train_batches=3)
    assert (task.completed, task.total) == (3, 3)
    assert task.description.endswith("student epoch 2/2")

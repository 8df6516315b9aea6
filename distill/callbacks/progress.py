"""``StepProgressBar``: Lightning's rich progress bar, counting what ends the training.

Lightning's bar counts the batches of the current epoch (``Epoch 0/0 ... 300/500``) even when
``trainer.max_steps`` ends the training mid-epoch, and labels a ``max_epochs=-1`` run ``Epoch 0/-2``.
This bar counts optimizer steps out of ``max_steps`` whenever the step budget is reached first
(across epochs, and from the restored step on a resume), and batches of ``epoch e/E`` otherwise;
its label says what is trained (``student``, ``teacher fine-tune``).
"""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch.callbacks import RichProgressBar


def step_budget(
    max_steps: int | None, max_epochs: int | None, batches_per_epoch: float, accumulate_grad_batches: int = 1
) -> int | None:
    """``max_steps`` when it ends the training no later than ``max_epochs`` does, else None.

    ``max_steps`` of -1 or None means no step budget; ``max_epochs`` of -1 or None means no epoch
    budget (Lightning's value when only ``max_steps`` is set).
    """
    if max_steps is None or max_steps < 0:
        return None
    if max_epochs is None or max_epochs < 0 or math.isinf(batches_per_epoch):
        return max_steps
    steps_per_epoch = math.ceil(batches_per_epoch / max(accumulate_grad_batches, 1))
    return max_steps if max_steps <= max_epochs * steps_per_epoch else None


def train_description(label: str, budget: int | None, current_epoch: int, max_epochs: int | None) -> str:
    """``"<label> step"`` (the bar then shows steps N/max_steps), or ``"<label> epoch e/E"`` (1-based)."""
    if budget is not None:
        return f"{label} step"
    if max_epochs is None or max_epochs < 0:
        return f"{label} epoch {current_epoch + 1}"
    return f"{label} epoch {current_epoch + 1}/{max_epochs}"


class StepProgressBar(RichProgressBar):
    """A :class:`~lightning.pytorch.callbacks.RichProgressBar` whose training bar tells the truth.

    Args:
        label: what is trained, first on the bar (``student``, ``teacher fine-tune``).
        **kwargs: RichProgressBar's (``refresh_rate``, ``leave``, ``theme``, ``console_kwargs``).
    """

    def __init__(self, label: str = "train", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label = label

    @property
    def step_budget(self) -> int | None:
        trainer = self.trainer
        return step_budget(
            trainer.max_steps, trainer.max_epochs, trainer.num_training_batches, trainer.accumulate_grad_batches
        )

    @property
    def total_train_batches(self) -> int | float:
        """``max_steps`` when the step budget decides (the bar then counts steps), else the epoch's batches."""
        budget = self.step_budget
        return budget if budget is not None else self.trainer.num_training_batches

    def _get_train_description(self, current_epoch: int) -> str:
        return train_description(self.label, self.step_budget, current_epoch, self.trainer.max_epochs)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        budget = self.step_budget
        if budget is not None and self.train_progress_bar_id is not None:
            return  # one bar for the whole step budget, not one per epoch
        super().on_train_epoch_start(trainer, pl_module)
        if budget is not None:  # a resumed run starts at the steps already done
            self._update(self.train_progress_bar_id, trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.step_budget is None:
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()

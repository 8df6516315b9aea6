"""What every ``compress`` callback shares: the :class:`StudentCompression` interface ``distill.train``
calls after the last stage, the calibration batches, and the refusal of a checkpoint written with
other settings."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import nn

from distill.errors import ConfigError

log = logging.getLogger(__name__)


class StudentCompression(Callback):
    """A ``compress`` callback: :meth:`compress_student` turns the trained student into what ships
    and returns what ``metrics.json`` records of it (under ``student.compression``).

    ``order``: when several run, lower first (pruning, 0, before quantization, 1: masks and removed
    rows are settled on float weights, then those are converted)."""

    order = 1

    def compress_student(self, module: L.LightningModule, trainer: L.Trainer) -> dict[str, Any]:
        raise NotImplementedError

    def model_problems(self, student: nn.Module) -> list[str]:
        """What this callback cannot do to ``student`` (built on the ``meta`` device), checked
        before any weights load."""
        return []


def restart_schedule_problems(field: str, restart_schedule) -> list[str]:
    """``restart_schedule`` must be a boolean."""
    if isinstance(restart_schedule, bool):
        return []
    return [f"{field}.restart_schedule={restart_schedule!r}: true (the learning-rate schedule starts over when the "
            "compression lands: LR rewinding, distill.lr_schedules) or false"]


def restart_schedule_at(module: L.LightningModule, step: int) -> None:
    """Ask ``module`` (before its optimizer is built: a callback's ``setup``) to start its warm-up
    + decay schedule over at ``step`` (:mod:`distill.lr_schedules`)."""
    restarts = getattr(module, "schedule_restarts", None)
    if restarts is not None:
        restarts.add(step)
        log.info("learning-rate schedule starts over at step %d (LR rewinding)", step)


def refuse_other_settings(
    field: str, done: str, saved: dict[str, Any] | None, current: dict[str, Any], added_later: dict[str, Any] | None = None
) -> None:
    """A resumed run (``ckpt_path=``) must ask for the settings its checkpoint was ``done`` with
    (trained, pruned): otherwise a :class:`ConfigError` names the fields that differ.
    ``added_later``: options newer than some checkpoints, with the value such a checkpoint was ``done`` with."""
    if saved is None:
        return
    saved = {**(added_later or {}), **saved}
    if saved == current:
        return
    changed = sorted(key for key in saved if saved[key] != current.get(key))
    raise ConfigError(
        [
            f"ckpt_path: the checkpoint was {done} with {field} {saved}; this run asks for {current} "
            f"(differs in {changed}). Resume with the run's own compress settings (its .hydra/overrides.yaml)"
        ]
    )


def calibration_inputs(trainer: L.Trainer, count: int) -> list[dict]:
    """The first ``count`` training batches of the run (labelled data, no transfer text:
    ``datamodule.calibration_batches``); the calibration pass
    (:func:`distill.calibration.run_calibration`) leaves the labels out."""
    return trainer.datamodule.calibration_batches(count)

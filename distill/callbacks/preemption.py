"""Preemption: on SIGTERM (and SIGUSR1 under SLURM) save a full checkpoint at the current step.

Lightning already turns SIGTERM into a clean stop: its signal connector sets a flag during
``trainer.fit``, and the training loop raises ``SIGTERMException`` (a ``SystemExit``) once the
current batch has finished its optimizer step, so the weights, optimizer and step counter agree.
What it does not do is save: ``ModelCheckpoint(save_on_exception=True)`` would, but on every
exception (a non-finite loss too, which must keep the last good checkpoint) and with the sweep's
``save_weights_only``. :class:`PreemptionCheckpoint` saves on ``SIGTERMException`` only, always the
full state, to ``<checkpoint folder>/last.ckpt`` (the file ``ckpt_path=auto`` looks for).

Under SLURM (``SLURM_JOB_ID`` set) SIGUSR1 (``sbatch --signal=USR1@<seconds>``) is handled like
SIGTERM. Lightning's own SIGUSR1 handler (SLURM auto-requeue) would save ``hpc_ckpt_<n>.ckpt`` from
inside the signal handler, mid-step, into ``default_root_dir``, which a rerun of ``distill`` (a new
run folder) never reads; installing this handler before Lightning registers its own keeps it out.
The job script requeues (``scontrol requeue``, or SLURM's own requeue on preemption) and reruns the
command with ``ckpt_path=auto``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


def _sigusr1_as_sigterm(signum, frame) -> None:
    log.info("received SIGUSR1 (SLURM's warning before the time limit): stopping as on SIGTERM")
    signal.raise_signal(signal.SIGTERM)  # Lightning's SIGTERM handler sets the stop flag


class PreemptionCheckpoint(Callback):
    """Save ``<dirpath>/last.ckpt`` (full: weights, optimizer, scheduler, step) when a SIGTERM stops fit.

    Args:
        dirpath: where to write when the trainer has no ``ModelCheckpoint``; with one, its
            ``dirpath`` is used (stages give each their own).

    Attributes:
        saved: ``(step, path)`` of the checkpoint written on the signal; ``(step, None)`` when
            checkpointing is off; ``None`` while no signal has stopped training.
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)
        self.saved: tuple[int, str | None] | None = None
        self._previous_sigusr1 = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        in_main_thread = threading.current_thread() is threading.main_thread()
        if stage == TrainerFn.FITTING and "SLURM_JOB_ID" in os.environ and in_main_thread:
            self._previous_sigusr1 = signal.signal(signal.SIGUSR1, _sigusr1_as_sigterm)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous_sigusr1 is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGUSR1, self._previous_sigusr1)
            self._previous_sigusr1 = None

    def checkpoint_path(self, trainer: L.Trainer) -> Path:
        callback = trainer.checkpoint_callback
        dirpath = callback.dirpath if isinstance(callback, ModelCheckpoint) and callback.dirpath else self.dirpath
        return Path(dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        if trainer.sanity_checking or trainer.global_step == 0:
            self.saved = (trainer.global_step, None)  # nothing trained yet: a fresh start loses nothing
            return
        path = self.checkpoint_path(trainer)
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        _between_epochs(checkpoint)
        trainer.strategy.save_checkpoint(checkpoint, path)  # atomic: distill.checkpoints.AtomicCheckpointIO
        self.saved = (trainer.global_step, str(path))
        log.info("SIGTERM: saved a full checkpoint at step %d to %s", trainer.global_step, path)


def _between_epochs(checkpoint: dict) -> None:
    """A signal that lands while an epoch ends is raised by the fit loop after the epoch counts as
    completed, with the epoch loop's batch counters still at the epoch's end. Lightning resumes such
    a checkpoint in the next epoch but counts those batches as already fetched there, so it would
    skip the next epoch's first batches. Zero them: the checkpoint then reads as the start of the
    next epoch, which is where the run stood (the data loader's state already says so)."""
    fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
    epochs = fit_loop.get("epoch_progress", {}).get("current", {})
    batches = fit_loop.get("epoch_loop.batch_progress", {}).get("current", {})
    if epochs and batches and epochs.get("completed") == epochs.get("processed") == epochs.get("ready"):
        for key in ("ready", "started", "processed", "completed"):
            batches[key] = 0

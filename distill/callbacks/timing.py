"""How long a run's training steps and its whole fit took, for ``metrics.json`` (``timing``).

Every run records it (:func:`distill.train.make_trainer` adds :class:`StepTimes`): the median step
(batch start to the end of its optimizer step, the first two steps left out as warm-up), the
number of steps timed and the fit's wall time. Benchmarks (``scripts/bench_cache.py``) and sweeps
compare runs with these figures instead of timing the process from outside.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

#: Steps at the start of a fit left out of the median (allocator and optimizer-state warm-up).
WARMUP_STEPS = 2


class StepTimes(Callback):
    """Wall time of each training step and of each ``fit`` (see the module docstring).

    Attributes:
        step_seconds: one entry per training step of the last fit.
        fit_seconds: wall time of the last fit (``None`` before one ended).
    """

    def __init__(self) -> None:
        self.step_seconds: list[float] = []
        self.fit_seconds: float | None = None
        self._fit_start = self._step_start = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.step_seconds, self.fit_seconds = [], None
        self._fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.step_seconds.append(time.perf_counter() - self._step_start)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_seconds = time.perf_counter() - self._fit_start

    def summary(self) -> dict[str, Any]:
        """``{"step_ms_median", "steps_timed", "fit_seconds"}`` of the last fit."""
        timed = self.step_seconds[WARMUP_STEPS:] or self.step_seconds
        return {
            "step_ms_median": round(statistics.median(timed) * 1000, 2) if timed else None,
            "steps_timed": len(timed),
            "fit_seconds": round(self.fit_seconds, 2) if self.fit_seconds is not None else None,
        }

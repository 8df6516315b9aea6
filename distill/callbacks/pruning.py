"""The ``compress`` group's pruning callbacks: masks on the student's weights during distillation
(:class:`Pruning`: magnitude, Wanda, SparseGPT, N:M), and the base every pruning callback shares
(the structured ones, FFN neurons and attention heads: :mod:`distill.callbacks.structured_pruning`).

The masks live in the callback (saved in checkpoints, restored by ``ckpt_path=`` resume) and reach
the student in one place, :class:`~distill.pruning.masks.MaskSet`: gradients of pruned weights are
zeroed before each optimizer step, the weights themselves after it. Under DDP rank 0 computes each
mask and broadcasts it, so every rank holds the same one. Formulas, papers and schedules:
:mod:`distill.pruning` and docs/compression.md.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import nn

from distill.calibration import input_statistics
from distill.callbacks.compression import (
    StudentCompression,
    calibration_inputs,
    refuse_other_settings,
    restart_schedule_at,
    restart_schedule_problems,
)
from distill.errors import ConfigError
from distill.pruning.masks import MaskSet, global_masks, layer_mask, n_m_mask, row_mask
from distill.pruning.schedule import SparsitySchedule
from distill.pruning.scores import magnitude_scores, wanda_scores
from distill.pruning.settings import CRITERIA, FIELD, SCOPES, parse_pattern, schedule_problems

log = logging.getLogger(__name__)

#: Gives the calibration batches (the run's first training batches) when a criterion reads inputs.
Calibration = Callable[[], Iterable[dict[str, torch.Tensor]]]


class MaskedPruning(StudentCompression):
    """What every pruning callback shares: the schedule, the masks and where they are applied,
    logging, checkpoint state and the end-of-run figures. Subclasses compute the masks."""

    method = "prune"
    order = 0
    #: Where the node sits in the run config (its problems and a resume's refusal name it).
    field = FIELD
    #: Whether computing the masks also changes the kept weights (SparseGPT).
    rewrites_weights = False

    def __init__(
        self, problems: list[str], schedule: str, sparsity: float, start_step: int, end_step: int | None,
        every: int, initial_sparsity: float, calibration_batches: int, restart_schedule: bool = False,
    ) -> None:
        """``problems``: the subclass's own fields'; raised with the schedule's in one :class:`ConfigError`.
        ``restart_schedule``: the learning-rate schedule starts over at the step the final masks land
        (one_shot: ``start_step``; gradual: ``end_step``), so recovery trains at the run's peak rate
        (LR rewinding, Renda et al. 2020; :mod:`distill.lr_schedules`)."""
        problems = problems + schedule_problems(
            schedule, sparsity, start_step, end_step, every, initial_sparsity, calibration_batches, self.field
        ) + restart_schedule_problems(self.field, restart_schedule)
        if restart_schedule is True and schedule == "after_training":
            problems.append(f"{self.field}.restart_schedule=true: schedule=after_training prunes after the last step "
                            "(no recovery to restart the schedule for); set restart_schedule=false")
        if problems:
            raise ConfigError(problems)
        super().__init__()
        self.schedule = SparsitySchedule(schedule, float(sparsity), start_step, end_step or 0, every, float(initial_sparsity))
        self.calibration_batches = calibration_batches
        self.restart_schedule = restart_schedule
        self.masks = MaskSet()
        self.last_update: int | None = None
        #: ``self.masks.figures()``, computed when the masks change (not at every step: a pass over them).
        self._figures: dict[str, Any] | None = None

    # -- what a subclass provides ------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def compute_masks(self, student: nn.Module, calibration: Calibration, sparsity: float) -> dict[str, torch.Tensor]:
        """The masks at ``sparsity`` (inside the current ones); ``calibration()`` gives batches."""
        raise NotImplementedError

    def _calibration(self, trainer: L.Trainer) -> Calibration:
        return lambda: calibration_inputs(trainer, self.calibration_batches)

    def describe(self) -> str:
        raise NotImplementedError

    def final_step(self) -> int:
        """The step the masks reach the target sparsity (after_training: the run's end)."""
        return self.schedule.end_step if self.schedule.kind == "gradual" else self.schedule.start_step

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.restart_schedule:
            restart_schedule_at(pl_module, self.final_step())

    def all_settings(self) -> dict[str, Any]:
        """:meth:`settings` and the schedule restart: what a resumed run must ask for again."""
        return {**self.settings(), "restart_schedule": self.restart_schedule}

    # -- the masks, during training ----------------------------------------------------------
    def _update(self, pl_module: L.LightningModule, trainer: L.Trainer, sparsity: float) -> None:
        new = self.compute_masks(pl_module.student, self._calibration(trainer), sparsity) if trainer.is_global_zero else None
        new = trainer.strategy.broadcast(new, src=0)  # every rank prunes what rank 0 chose
        if self.rewrites_weights and trainer.world_size > 1:  # and keeps the weights rank 0 rewrote
            parameters = dict(pl_module.student.named_parameters())
            weights = {name: parameters[name].detach().cpu() for name in new} if trainer.is_global_zero else None
            with torch.no_grad():
                for name, value in trainer.strategy.broadcast(weights, src=0).items():
                    parameters[name].copy_(value)
        device = next(pl_module.student.parameters()).device
        self.masks.update({name: mask.to(device) for name, mask in new.items()})
        self.masks.apply(pl_module.student)
        self._figures = figures = self.masks.figures()
        first_or_last = self.last_update is None or sparsity >= self.schedule.sparsity
        log.log(
            logging.INFO if first_or_last else logging.DEBUG,  # a gradual schedule updates many times
            "pruning at step %d: %s, sparsity %.3f", trainer.global_step, self.describe(), figures["sparsity"],
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.schedule.pending(step, self.last_update):
            self._update(pl_module, trainer, self.schedule.target(step))
            self.last_update = step
            logged = {f"prune/sparsity/{name}": value for name, value in self._figures["per_parameter"].items()}
            pl_module.log_dict(logged, on_step=True, on_epoch=False)
        if self.masks:
            if self._figures is None:  # masks restored from a checkpoint
                self._figures = self.masks.figures()
            pl_module.log("prune/sparsity", self._figures["sparsity"], on_step=True, on_epoch=False)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.masks.mask_gradients(pl_module.student)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.masks.apply(pl_module.student)  # after the optimizer step: pruned weights stay zero

    def on_train_start(self, trainer, pl_module) -> None:
        self.masks.apply(pl_module.student)  # a resumed run's masks, restored with the checkpoint

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"settings": self.all_settings(), "masks": self.masks.state_dict(), "last_update": self.last_update}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        refuse_other_settings(self.field, "pruned", state_dict.get("settings"), self.all_settings(),
                              added_later={"restart_schedule": False})
        self.masks = MaskSet(state_dict.get("masks") or {})
        self.last_update = state_dict.get("last_update")
        self._figures = None

    # -- the end of the run ------------------------------------------------------------------
    def compress_student(self, module: L.LightningModule, trainer: L.Trainer) -> dict[str, Any]:
        final_step = self.final_step()
        short = self.schedule.kind != "after_training" and (self.last_update is None or self.last_update < final_step)
        if short:
            log.warning(
                "training ended at step %d, before the pruning schedule's last step %d: the student is pruned "
                "to the target sparsity now, without recovery training", trainer.global_step, final_step,
            )
        if short or self.schedule.kind == "after_training":
            self._update(module, trainer, self.schedule.sparsity)
        self.masks.apply(module.student)
        figures = self.masks.figures()
        log.info("student pruned: %s, %d of %d weights zero", self.describe(), figures["pruned"], figures["masked"])
        return {
            "method": f"{self.method}-{self.settings().get('criterion', 'activation')}",
            "format": self.describe(),
            "sparsity": figures["sparsity"],
            "pruned_parameters": figures["pruned"],
            "masked_parameters": figures["masked"],
            "sparsity_per_parameter": figures["per_parameter"],
            "schedule": self.schedule.kind,
            "settings": self.all_settings(),
            **self.export(module.student),
        }

    def export(self, student: nn.Module) -> dict[str, Any]:
        """Make the student what ships (structured pruning removes rows here); extra figures."""
        return {}


class Pruning(MaskedPruning):
    """Unstructured or N:M pruning of the student's Linear layers during (or after) distillation.

    Criteria (score: larger is kept):

    - ``magnitude``: ``|w_ij|`` (Han et al. 2015; gradual: Zhu & Gupta 2017). Scope ``layer``
      (default), ``global`` (one threshold over all layers) or ``row``.
    - ``wanda``: ``|w_ij| · ‖X_j‖₂`` with ``X_j`` the layer's input feature ``j`` over the calibration
      tokens ("A Simple and Effective Pruning Approach for LLMs", Sun et al. 2024,
      arXiv:2306.11695), compared per output ``row`` (default) or per ``layer``.
    - ``sparsegpt``: one shot (``schedule: one_shot`` or ``after_training``), with the kept weights
      updated to make up for the pruned ones (:mod:`distill.pruning.sparsegpt`).

    ``pattern: "2:4"`` keeps 2 of every 4 consecutive input weights of each row (any criterion; the
    sparsity is then ``1 − N/M``). Gradually, each row first loses its lowest-scoring weights among
    those the pattern drops (each group's ``M − N`` lowest), on the cubic, until at ``end_step`` it
    holds the pattern exactly (:func:`~distill.pruning.masks.n_m_mask`). Modules: every ``nn.Linear`` of the
    student except the ``exclude`` name patterns (``fnmatch``; the classifier by default).

    Args:
        sparsity: the share of each pruned weight set to zero at the end (``0 < s < 1``).
        criterion, scope, pattern: as above.
        schedule: ``gradual`` (cubic, ``start_step`` → ``end_step``, masks updated ``every`` steps
            from ``initial_sparsity``), ``one_shot`` (at ``start_step``) or ``after_training``
            (no retraining: the baseline).
        calibration_batches: training batches Wanda and SparseGPT read (at every mask update).
        restart_schedule: start the learning-rate schedule over when the final masks land (see
            :class:`MaskedPruning`).
    """

    def __init__(
        self,
        sparsity: float | None = None,
        criterion: str = "magnitude",
        scope: str | None = None,
        pattern: str | None = None,
        schedule: str = "gradual",
        start_step: int = 0,
        end_step: int | None = None,
        every: int = 10,
        initial_sparsity: float = 0.0,
        exclude: list[str] | tuple[str, ...] = ("classifier",),
        calibration_batches: int = 8,
        restart_schedule: bool = False,
    ) -> None:
        problems = []
        n_m = None
        try:
            n_m = parse_pattern(pattern)
        except ValueError:
            problems.append(f"{FIELD}.pattern={pattern!r}: 'N:M' with 0 < N < M (e.g. '2:4'), or null")
        if n_m is not None:
            implied = 1 - n_m[0] / n_m[1]
            if sparsity is not None and abs(sparsity - implied) > 1e-9:
                problems.append(f"{FIELD}.sparsity={sparsity!r}: pattern {pattern} prunes {implied:g}; leave sparsity null")
            sparsity = implied
        if criterion not in CRITERIA:
            problems.append(f"{FIELD}.criterion={criterion!r}: allowed: {list(CRITERIA)}")
        if scope not in SCOPES:
            problems.append(f"{FIELD}.scope={scope!r}: allowed: {list(SCOPES)}")
        elif criterion == "sparsegpt" and scope is not None:
            problems.append(f"{FIELD}.scope={scope!r}: sparsegpt chooses its masks per block of columns; leave scope null")
        elif criterion == "wanda" and scope == "global":
            problems.append(f"{FIELD}.scope=global: wanda's scores compare within a layer; use row or layer")
        if criterion == "sparsegpt" and schedule == "gradual":
            problems.append(
                f"{FIELD}.schedule=gradual: sparsegpt prunes in one shot (it rewrites the kept weights); "
                "use one_shot or after_training"
            )
        if sparsity is None and pattern is None:
            problems.append(f"{FIELD}.sparsity: required (a fraction 0 < sparsity < 1), unless pattern is set")
        checked = 0.5 if sparsity is None else sparsity  # a missing sparsity (or a bad pattern's) is reported above
        super().__init__(
            problems, schedule, checked, start_step, end_step, every, initial_sparsity, calibration_batches, restart_schedule
        )
        self.criterion = criterion
        self.rewrites_weights = criterion == "sparsegpt"
        self.scope = scope or ("row" if criterion == "wanda" else "layer")
        self.pattern = n_m
        self.exclude = tuple(exclude or ())

    def settings(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion, "scope": self.scope, "sparsity": self.schedule.sparsity,
            "pattern": None if self.pattern is None else f"{self.pattern[0]}:{self.pattern[1]}",
            "schedule": self.schedule.kind, "start_step": self.schedule.start_step,
            "end_step": self.schedule.end_step, "every": self.schedule.every, "exclude": list(self.exclude),
        }

    def describe(self) -> str:
        shape = f"{self.pattern[0]}:{self.pattern[1]}" if self.pattern else f"{self.schedule.sparsity:.0%}"
        return f"{shape} {self.criterion}" + ("" if self.pattern or self.criterion == "sparsegpt" else f" ({self.scope})")

    def pruned_layers(self, student: nn.Module) -> dict[str, nn.Linear]:
        return {
            name: module
            for name, module in student.named_modules()
            if isinstance(module, nn.Linear) and not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)
        }

    def model_problems(self, student: nn.Module) -> list[str]:
        layers = self.pruned_layers(student)
        if not layers:
            return [f"{FIELD}.exclude={list(self.exclude)}: leaves no Linear layer of the student to prune"]
        if self.pattern is None:
            return []
        m = self.pattern[1]
        odd = [f"{name} ({layer.in_features})" for name, layer in layers.items() if layer.in_features % m]
        return [f"{FIELD}.pattern={self.settings()['pattern']}: input widths not a multiple of {m}: {', '.join(odd[:5])}"] if odd else []

    def compute_masks(self, student: nn.Module, calibration: Calibration, sparsity: float) -> dict[str, torch.Tensor]:
        layers = self.pruned_layers(student)
        if self.criterion == "sparsegpt":
            return self._sparsegpt(student, layers, calibration, sparsity)
        scores = {}
        if self.criterion == "wanda":
            stats = input_statistics(student, layers, calibration())
        for name, layer in layers.items():
            if self.criterion == "wanda":
                score = wanda_scores(layer.weight, stats[name].norms)
            else:
                score = magnitude_scores(layer.weight)
            old = self.masks.get(f"{name}.weight")
            if old is not None:
                score[~old.to(score.device)] = -torch.inf
            scores[f"{name}.weight"] = score
        if self.pattern is not None:
            return {name: n_m_mask(score, *self.pattern, sparsity) for name, score in scores.items()}
        if self.scope == "global":
            return global_masks(scores, sparsity)
        choose = row_mask if self.scope == "row" else layer_mask
        return {name: choose(score, sparsity) for name, score in scores.items()}

    def _sparsegpt(self, student, layers, calibration: Calibration, sparsity) -> dict[str, torch.Tensor]:
        """Prune every layer by SparseGPT, in place (the kept weights change), from one calibration pass."""
        from distill.pruning.sparsegpt import sparsegpt_prune

        stats = input_statistics(student, layers, calibration(), gram=True)
        masks = {}
        for name, layer in layers.items():
            old = self.masks.get(f"{name}.weight")
            weight, mask = sparsegpt_prune(
                layer.weight.detach(), stats.pop(name).hessian(), sparsity, self.pattern, keep=old
            )
            with torch.no_grad():
                layer.weight.copy_(weight)
            masks[f"{name}.weight"] = mask
        return masks

"""``DistillationModule``: a frozen teacher, a trainable student and a :class:`LossMix`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from distill.checkpoints import rng_states, set_rng_states
from distill.losses import LossInputs, LossMix, LossResult, ModelOutputs
from distill.models.capture import capture_modules
from distill.nonfinite import NONFINITE_POLICIES, NonFiniteGuard
from distill.lr_schedules import restarted_scheduler
from distill.teacher_cache import TeacherOutputCache
from distill.teacher_outputs import TeacherOutputs, model_outputs
from distill.teachers import ENSEMBLE_MODES, TeacherEnsemble, _FrozenTeacher
from distill.val_metrics import log_classification_metrics, log_token_losses, register_val_metrics

__all__ = ["DistillationModule", "ENSEMBLE_MODES", "NONFINITE_POLICIES", "TeacherEnsemble", "model_outputs"]

#: Batch keys that are never model inputs: targets (``label_mask`` marks transfer-set rows) and
#: ``example_index``, the row a teacher-output cache reads.
TARGET_KEYS = ("labels", "label_mask", "example_index")


class DistillationModule(TeacherOutputs, L.LightningModule):
    """Distil ``teacher`` into ``student`` with the objective ``loss``.

    With ``teacher=None`` it fine-tunes ``student`` on the labels alone (the loss must then use
    only label terms): this makes teachers and no-distillation baselines. With ``ensemble`` instead
    of ``teacher`` it learns from several teachers (see :class:`TeacherEnsemble`).

    Args:
        student: the model that trains.
        teacher: the frozen model to imitate, or ``None``.
        ensemble: several frozen teachers (not together with ``teacher``), or ``None``.
        loss: the weighted terms.
        optimizer: ``params -> Optimizer`` (Hydra ``_partial_: true``).
        scheduler: ``(optimizer, num_warmup_steps, num_training_steps) -> LRScheduler`` or ``None``.
        warmup_ratio: share of the training steps spent warming the learning rate up.
        num_labels: classes (``1`` = regression).
        metrics: metric names for evaluation (see :mod:`distill.metrics`); classification only.
        task: ``sequence_classification`` (one logit row per example), ``masked_lm`` (token logits:
            the losses see only the masked positions, see :meth:`LossInputs.for_tokens`) or
            ``feature_extraction`` (a base model: hidden states, no logits, no labels) or
            ``causal_lm`` (next-token logits: the losses see the scored positions, shifted once, see
            :meth:`LossInputs.for_next_tokens`) or ``seq2seq_lm`` (an encoder-decoder: the decoder's
            logits at the labelled target positions; see :meth:`model_inputs`).
        run_config: the resolved run config, stored in checkpoints as hyper-parameters.
        nonfinite: what a NaN/inf training loss does (:mod:`distill.nonfinite`): ``stop`` raises
            :class:`~distill.errors.NonFiniteLossError` naming the step, the terms and whose outputs
            were non-finite, before the optimizer step (so no NaN weights reach a checkpoint);
            ``skip`` skips that batch's optimizer step instead (the step still counts for
            ``max_steps`` and the scheduler), up to ``max_skipped_batches`` times per run, then stops.
            Checked once per step (one device sync).
        max_skipped_batches: the ``skip`` policy's budget.
        teacher_cache: the teacher's outputs read from disk (:mod:`distill.teacher_cache`) instead of
            running ``teacher`` in training and validation steps; batches must carry
            ``example_index``. ``teacher`` is still given (the report measures it).
        vocab_size: token tasks: compare the models on their first ``vocab_size`` logits, the
            tokenizer's vocabulary (models may pad their embedding matrices to different sizes);
            ``None``: all logits (the widths must agree).
    """

    def __init__(
        self,
        student: nn.Module,
        loss: LossMix,
        optimizer: Callable[..., torch.optim.Optimizer],
        *,
        teacher: nn.Module | None = None,
        ensemble: TeacherEnsemble | None = None,
        scheduler: Callable[..., Any] | None = None,
        warmup_ratio: float = 0.0,
        num_labels: int = 2,
        metrics: list[str] | tuple[str, ...] = ("accuracy",),
        task: str = "sequence_classification",
        run_config: dict | None = None,
        nonfinite: str = "stop",
        max_skipped_batches: int = 0,
        teacher_cache: TeacherOutputCache | None = None,
        vocab_size: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters({"config": run_config or {}})
        # from_pretrained returns eval-mode models and Lightning keeps modules in the mode it finds
        # them: put the student in train mode (dropout on) once, here.
        self.student = student.train()
        self.loss = loss
        if teacher is not None and ensemble is not None:
            raise ValueError("give either teacher or ensemble (several teachers), not both")
        self._teacher = (
            _FrozenTeacher(teacher, loss.captures, loss.teacher_modules) if teacher is not None else None
        )
        self.ensemble = ensemble
        if teacher_cache is not None and teacher is None:
            raise ValueError("teacher_cache holds one teacher's outputs: give the teacher too")
        self.teacher_cache = teacher_cache
        self._teachers: dict[str, _FrozenTeacher] = {}
        student_mixes = [loss]
        if ensemble is not None:
            if ensemble.mode == "per_teacher":
                # Registered: their projections train with the student and land in checkpoints.
                self.teacher_losses = nn.ModuleDict(dict(ensemble.losses))
                student_mixes += list(ensemble.losses.values())
            for name, model in ensemble.teachers.items():
                mix = self._teacher_mix(name)
                self._teachers[name] = (
                    _FrozenTeacher(model, mix.captures, mix.teacher_modules) if mix is not None else _FrozenTeacher(model)
                )
        # Modules the losses read (q/k/v projections, modules by path), captured by hooks during
        # each forward only (None if no loss reads any).
        self._student_capture_names = (
            tuple(sorted({name for mix in student_mixes for name in mix.captures})),
            tuple(sorted({path for mix in student_mixes for path in mix.student_modules})),
        )
        self.student_layers_swapped()
        self.nonfinite = NonFiniteGuard(nonfinite, int(max_skipped_batches))
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.warmup_ratio = warmup_ratio
        #: Learning-rate multipliers by parameter-name ending, set by callbacks in their ``setup``
        #: (before the optimizer is built), e.g. QAT's learned scales; see :meth:`configure_optimizers`.
        self.lr_ratios: dict[str, float] = {}
        #: Optimizer steps where the warm-up + decay schedule starts over for the steps left (LR
        #: rewinding), set by compress callbacks in their ``setup``; see :mod:`distill.lr_schedules`.
        self.schedule_restarts: set[int] = set()
        self.num_labels = num_labels
        self.task = task
        self.vocab_size = vocab_size
        self.classification = task == "sequence_classification"
        # Whether the losses read hidden states (both models), decided once, not per step.
        self.hidden_states_needed = any(mix.uses_hidden_states for mix in student_mixes)
        #: Training examples each loss term has seen on this rank (label terms skip transfer text).
        self.examples_seen: dict[str, int] = {}
        #: The stage (``stages.<name>``) this module trains, written into its checkpoints; None: one stage.
        self.stage: str | None = None
        # Without class predictions (masked_lm, feature_extraction) the report uses the eval loss.
        metrics = list(metrics) if self.classification else []
        register_val_metrics(
            self, metrics, num_labels, teacher is not None, list(ensemble.teachers) if ensemble is not None else []
        )

    # -- steps ------------------------------------------------------------------------------
    def _inputs_for(self, batch, inputs, student: ModelOutputs, teacher: ModelOutputs | None) -> LossInputs:
        if self.task == "masked_lm":  # the one place token positions are selected
            return LossInputs.for_tokens(student, teacher, batch.get("labels"), inputs["attention_mask"])
        if self.task == "causal_lm":  # the one place the next-token shift and its masks happen
            return LossInputs.for_next_tokens(student, teacher, batch["labels"], inputs["attention_mask"], self.vocab_size)
        if self.task == "seq2seq_lm":  # decoder logits at t predict labels[t]: the rows with a label
            return LossInputs.for_tokens(student, teacher, batch["labels"], inputs["attention_mask"])
        return LossInputs(
            student=student,
            teacher=teacher,
            labels=batch.get("labels"),
            attention_mask=inputs["attention_mask"],
            logit_mask=None,  # sequence-level logits: one row per example
            label_mask=batch.get("label_mask"),
        )

    def _step_inputs(
        self, batch: dict[str, torch.Tensor], with_teacher: bool, split: str = "train"
    ) -> tuple[LossInputs, dict[str, LossInputs]]:
        """The run's loss inputs and, with several teachers, each teacher's (same student outputs)."""
        inputs = self.model_inputs(batch)
        student = model_outputs(self.student, inputs, self.hidden_states_needed, self._student_capture)
        if self.ensemble is None:
            teacher = self._teacher_outputs(inputs, batch, split) if with_teacher else None
            return self._inputs_for(batch, inputs, student, teacher), {}
        if not with_teacher:
            return self._inputs_for(batch, inputs, student, None), {}
        per_teacher = {
            name: self._inputs_for(batch, inputs, student, outputs)
            for name, outputs in self._ensemble_outputs(inputs).items()
        }
        any_inputs = next(iter(per_teacher.values()))
        if self.ensemble.mode == "average":
            combined = self._combined_teacher(per_teacher, self.loss.temperature)
            return dataclasses.replace(any_inputs, teacher=combined), per_teacher
        return dataclasses.replace(any_inputs, teacher=None), per_teacher

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What both models read of a batch: everything but the targets; for an encoder-decoder
        (``seq2seq_lm``) also the decoder's inputs, the labels shifted right behind its start token
        (made here, once, by the student's own ``prepare_decoder_input_ids_from_labels``)."""
        inputs = {key: value for key, value in batch.items() if key not in TARGET_KEYS}
        if self.task == "seq2seq_lm":
            inputs["decoder_input_ids"] = self.student.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
        return inputs

    def formula(self) -> str:
        """The whole objective as text: the run's loss, and in ``per_teacher`` mode each teacher's
        loss with its normalised weight; ``average`` mode names the mixture the teacher terms read."""
        text = self.loss.formula()
        if self.ensemble is None:
            return text
        weights = ", ".join(f"{name}: {weight:g}" for name, weight in self.ensemble.weights.items())
        if self.ensemble.mode == "average":
            return f"{text}  [z_t = T·log Σ_k w_k softmax(z_k/T), w = {{{weights}}}]"
        parts = [f"{self.ensemble.weights[name]:g}·{{{name}: {mix.formula()}}}" for name, mix in self.teacher_losses.items()]
        return " + ".join([text, *parts])

    def _loss_inputs(self, batch: dict[str, torch.Tensor], with_teacher: bool, split: str = "train") -> LossInputs:
        return self._step_inputs(batch, with_teacher, split)[0]

    def _objective(self, loss_inputs: LossInputs, per_teacher: dict[str, LossInputs]) -> LossResult:
        """The run's loss, plus in ``per_teacher`` mode each teacher's loss times its weight."""
        result = self.loss(loss_inputs)
        if self.ensemble is None or self.ensemble.mode != "per_teacher" or not per_teacher:
            return result
        total = result.total
        unweighted, weighted, counts = dict(result.unweighted), dict(result.weighted), dict(result.counts)
        for name, mix in self.teacher_losses.items():
            part = mix(per_teacher[name])
            weight = self.ensemble.weights[name]
            total = total + weight * part.total
            for term, value in part.unweighted.items():
                unweighted[f"{name}/{term}"] = value
                weighted[f"{name}/{term}"] = weight * part.weighted[term]
            for term, count in part.counts.items():
                counts[f"{name}/{term}"] = count
        return LossResult(total, unweighted, weighted, counts)

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Student logits for a batch of model inputs (the last hidden states for a base model)."""
        output = self.student(**inputs)
        return output.logits if hasattr(output, "logits") else output.last_hidden_state

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        mixes = {"": self.loss}
        if self.ensemble is not None and self.ensemble.mode == "per_teacher":
            mixes.update({f"{name}/": mix for name, mix in self.teacher_losses.items()})
        if any(mix.schedules for mix in mixes.values()):
            progress = self.global_step / max(1, int(self.trainer.estimated_stepping_batches) - 1)
            for prefix, mix in mixes.items():
                values = mix.set_progress(progress)
                self.log_dict({f"train/schedule/{prefix}{name}": value for name, value in values.items()})

    def _uses_teacher(self) -> bool:
        if self.ensemble is not None and self.ensemble.mode == "per_teacher":
            return True
        return self.loss.uses_teacher

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        """The loss to backpropagate; ``None`` (Lightning then skips backward and the optimizer
        step) for a batch the ``skip`` policy skips. A non-finite loss is checked before anything
        is logged or stepped (see :mod:`distill.nonfinite`)."""
        loss_inputs, per_teacher = self._step_inputs(batch, with_teacher=self._uses_teacher())
        result = self._objective(loss_inputs, per_teacher)
        batch_size = loss_inputs.attention_mask.size(0)
        where = f"epoch {self.current_epoch}, batch {batch_idx}"
        if not self.nonfinite.check(result, loss_inputs, per_teacher, self.global_step, where):
            self.log("train/nonfinite_skipped", float(self.nonfinite.skipped), batch_size=batch_size)
            return None
        logged = {"train/loss/total": result.total.detach()}
        for name, value in result.unweighted.items():
            logged[f"train/loss/{name}"] = value.detach()
            logged[f"train/loss/{name}_weighted"] = result.weighted[name].detach()
        for name, count in result.counts.items():
            logged[f"train/examples/{name}"] = float(count)
            self.examples_seen[name] = self.examples_seen.get(name, 0) + count
        self.log_dict(logged, batch_size=batch_size, prog_bar=False)
        self.log("train/temperature", self.loss.temperature, batch_size=batch_size)
        return result.total

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nonfinite_skipped"] = self.nonfinite.skipped  # the skip budget spans a resumed run
        checkpoint["stage"] = self.stage  # a multi-stage run resumes in the stage that wrote it
        # Lightning 2.6 does not save the global RNGs; dropout draws from torch's, so a resumed run
        # needs them to continue to the same weights (the data's randomness is per batch position,
        # see distill.data.resumable). Under DDP only rank 0's states are written: see on_load.
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.nonfinite.skipped = int(checkpoint.get("nonfinite_skipped", 0))
        states = checkpoint.get("rng_states")
        # One process only: under DDP the file holds rank 0's states, and giving them to every rank
        # would make all ranks draw the same dropout masks; the ranks keep their seeded streams.
        if states is not None and (self._trainer is None or self.trainer.world_size == 1):
            set_rng_states(states)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss_inputs, per_teacher = self._step_inputs(batch, with_teacher=self.has_teacher, split="eval")
        result = self._objective(loss_inputs, per_teacher)
        batch_size = loss_inputs.attention_mask.size(0)
        self.log("val/loss/total", result.total, batch_size=batch_size, prog_bar=True, sync_dist=True)
        for name, value in result.unweighted.items():
            self.log(f"val/loss/{name}", value, batch_size=batch_size, sync_dist=True)
        if not self.classification:
            log_token_losses(self, loss_inputs, per_teacher, batch_size)
            return
        log_classification_metrics(self, loss_inputs, per_teacher, batch_size)

    # -- optimisation -----------------------------------------------------------------------
    def student_layers_swapped(self) -> None:
        """Find the student modules the losses read again: a ``compress`` callback that swaps the
        student's layers (fake-quant QAT) calls this, so the capture hooks go on the new modules."""
        self._student_capture = capture_modules(self.student, *self._student_capture_names, role="student")

    def configure_optimizers(self):
        """The optimizer over the trainable parameters, one group per :attr:`lr_ratios` entry
        (parameters whose name ends with it, their learning rate that many times the run's; the
        scheduler scales every group alike), and the warm-up + decay schedule (started over at each
        of :attr:`schedule_restarts`)."""
        named = [(name, parameter) for name, parameter in self.named_parameters() if parameter.requires_grad]
        groups = [
            ([p for name, p in named if name.endswith(ending)], ratio)
            for ending, ratio in self.lr_ratios.items()
            if ratio != 1.0
        ]
        groups = [(params, ratio) for params, ratio in groups if params]
        grouped = {id(p) for params, _ in groups for p in params}
        rest = [p for _, p in named if id(p) not in grouped]
        if not groups:
            optimizer = self.optimizer_factory(rest)
        else:
            optimizer = self.optimizer_factory([{"params": rest}, *({"params": params} for params, _ in groups)])
            for group, (_, ratio) in zip(optimizer.param_groups[1:], groups, strict=True):
                group["lr"] *= ratio
        if self.scheduler_factory is None:
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        if self.schedule_restarts:
            scheduler = restarted_scheduler(
                self.scheduler_factory, optimizer, self.warmup_ratio, total_steps, self.schedule_restarts
            )
        else:
            scheduler = self.scheduler_factory(
                optimizer=optimizer,
                num_warmup_steps=int(self.warmup_ratio * total_steps),
                num_training_steps=total_steps,
            )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

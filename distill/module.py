"""``DistillationModule``: a frozen teacher, a trainable student and a :class:`LossMix`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from distill.losses import LossInputs, LossMix, ModelOutputs
from distill.losses.logits import hard_label_cross_entropy
from distill.metrics import build_metrics
from distill.models.capture import capture_modules, capture_outputs

#: Batch keys that are targets, never model inputs (``label_mask`` marks transfer-set rows).
TARGET_KEYS = ("labels", "label_mask")


class _FrozenTeacher:
    """Holds the teacher outside ``nn.Module`` registration.

    Unregistered, the teacher is absent from ``state_dict`` (checkpoints stay student-sized), from
    ``parameters()`` (no optimizer state, no DDP gradient sync or FSDP/DeepSpeed wrapping) and from
    the recursive ``.train()`` that Lightning calls (its dropout stays off).
    """

    def __init__(
        self, model: nn.Module, capture_names: tuple[str, ...] = (), module_paths: tuple[str, ...] = ()
    ) -> None:
        model.requires_grad_(False)
        model.eval()
        self.model = model
        self.capture = capture_modules(model, capture_names, module_paths, role="teacher")


def model_outputs(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    hidden_states: bool,
    capture: dict[str, list[nn.Module]] | None = None,
) -> ModelOutputs:
    """Run a transformers model once and keep the tensors the losses read.

    ``capture`` names modules (from :func:`distill.models.capture_modules`: per-layer q/k/v
    projections, ``module:<path>`` entries) whose outputs are recorded by forward hooks during this
    one call; the hooks are removed when it returns.
    """
    if not capture:
        output = model(**inputs, output_hidden_states=hidden_states)
        captured = None
    else:
        with capture_outputs(capture) as captured:
            output = model(**inputs, output_hidden_states=hidden_states)
    return ModelOutputs(
        logits=getattr(output, "logits", None),  # a base model (feature_extraction) has none
        hidden_states=output.hidden_states if hidden_states else None,
        captured=captured,
    )


class DistillationModule(L.LightningModule):
    """Distil ``teacher`` into ``student`` with the objective ``loss``.

    With ``teacher=None`` it fine-tunes ``student`` on the labels alone (the loss must then use
    only label terms): this makes teachers and no-distillation baselines.

    Args:
        student: the model that trains.
        teacher: the frozen model to imitate, or ``None``.
        loss: the weighted terms.
        optimizer: ``params -> Optimizer`` (Hydra ``_partial_: true``).
        scheduler: ``(optimizer, num_warmup_steps, num_training_steps) -> LRScheduler`` or ``None``.
        warmup_ratio: share of the training steps spent warming the learning rate up.
        num_labels: classes (``1`` = regression).
        metrics: metric names for evaluation (see :mod:`distill.metrics`); classification only.
        task: ``sequence_classification`` (one logit row per example), ``masked_lm`` (token logits:
            the losses see only the masked positions, see :meth:`LossInputs.for_tokens`) or
            ``feature_extraction`` (a base model: hidden states, no logits, no labels).
        run_config: the resolved run config, stored in checkpoints as hyper-parameters.
    """

    def __init__(
        self,
        student: nn.Module,
        loss: LossMix,
        optimizer: Callable[..., torch.optim.Optimizer],
        *,
        teacher: nn.Module | None = None,
        scheduler: Callable[..., Any] | None = None,
        warmup_ratio: float = 0.0,
        num_labels: int = 2,
        metrics: list[str] | tuple[str, ...] = ("accuracy",),
        task: str = "sequence_classification",
        run_config: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters({"config": run_config or {}})
        # from_pretrained returns eval-mode models and Lightning keeps modules in the mode it finds
        # them: put the student in train mode (dropout on) once, here.
        self.student = student.train()
        self.loss = loss
        self._teacher = (
            _FrozenTeacher(teacher, loss.captures, loss.teacher_modules) if teacher is not None else None
        )
        # Modules the losses read (q/k/v projections, modules by path), captured by hooks during
        # each forward only (None if no loss reads any).
        self._student_capture = capture_modules(student, loss.captures, loss.student_modules, role="student")
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.warmup_ratio = warmup_ratio
        self.num_labels = num_labels
        self.task = task
        self.classification = task == "sequence_classification"
        # Whether the losses read hidden states (both models), decided once, not per step.
        self.hidden_states_needed = loss.uses_hidden_states
        #: Training examples each loss term has seen on this rank (label terms skip transfer text).
        self.examples_seen: dict[str, int] = {}
        # Without class predictions (masked_lm, feature_extraction) the report uses the eval loss.
        metrics = list(metrics) if self.classification else []
        self.val_metrics = build_metrics(metrics, num_labels).clone(prefix="val/") if metrics else None
        if teacher is not None and self.classification:
            self.val_teacher_metrics = build_metrics(metrics, num_labels).clone(prefix="val/teacher/")
            if num_labels > 1:
                # Share of examples where student and teacher predict the same class.
                self.val_agreement = build_metrics(["accuracy"], num_labels).clone(prefix="val/teacher_")

    # -- the teacher ------------------------------------------------------------------------
    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher.model if self._teacher is not None else None

    def train(self, mode: bool = True) -> DistillationModule:
        super().train(mode)
        if self._teacher is not None:
            self._teacher.model.eval()
        return self

    def _teacher_outputs(self, inputs: dict[str, torch.Tensor]) -> ModelOutputs | None:
        """The teacher's outputs under no_grad, in eval mode, on the batch's device.

        This is the one place teacher outputs come from; a cache reader can replace it.
        """
        teacher = self.teacher
        if teacher is None:
            return None
        device = inputs["input_ids"].device
        if next(teacher.parameters()).device != device:
            teacher.to(device)
        with torch.no_grad():
            return model_outputs(teacher, inputs, self.hidden_states_needed, self._teacher.capture)

    # -- steps ------------------------------------------------------------------------------
    def _loss_inputs(self, batch: dict[str, torch.Tensor], with_teacher: bool) -> LossInputs:
        inputs = {key: value for key, value in batch.items() if key not in TARGET_KEYS}
        student = model_outputs(self.student, inputs, self.hidden_states_needed, self._student_capture)
        teacher = self._teacher_outputs(inputs) if with_teacher else None
        if self.task == "masked_lm":  # the one place token positions are selected
            return LossInputs.for_tokens(student, teacher, batch.get("labels"), inputs["attention_mask"])
        return LossInputs(
            student=student,
            teacher=teacher,
            labels=batch.get("labels"),
            attention_mask=inputs["attention_mask"],
            logit_mask=None,  # sequence-level logits: one row per example
            label_mask=batch.get("label_mask"),
        )

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Student logits for a batch of model inputs (the last hidden states for a base model)."""
        output = self.student(**inputs)
        return output.logits if hasattr(output, "logits") else output.last_hidden_state

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.loss.schedules:
            progress = self.global_step / max(1, int(self.trainer.estimated_stepping_batches) - 1)
            values = self.loss.set_progress(progress)
            self.log_dict({f"train/schedule/{name}": value for name, value in values.items()})

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss_inputs = self._loss_inputs(batch, with_teacher=self.loss.uses_teacher)
        result = self.loss(loss_inputs)
        batch_size = loss_inputs.attention_mask.size(0)
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

    def _predictions(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.squeeze(-1).float() if self.num_labels == 1 else logits.argmax(-1)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss_inputs = self._loss_inputs(batch, with_teacher=self.teacher is not None)
        result = self.loss(loss_inputs)
        batch_size = loss_inputs.attention_mask.size(0)
        self.log("val/loss/total", result.total, batch_size=batch_size, prog_bar=True, sync_dist=True)
        for name, value in result.unweighted.items():
            self.log(f"val/loss/{name}", value, batch_size=batch_size, sync_dist=True)
        if not self.classification:
            self._log_token_losses(loss_inputs, batch_size)
            return
        student_predictions = self._predictions(loss_inputs.student.logits)
        labels = loss_inputs.labels
        if labels is not None and self.val_metrics is not None:
            self.val_metrics.update(student_predictions, labels)
            self.log_dict(self.val_metrics, batch_size=batch_size, prog_bar=True)
        if loss_inputs.teacher is not None:
            teacher_predictions = self._predictions(loss_inputs.teacher.logits)
            if labels is not None and self.val_metrics is not None:
                self.val_teacher_metrics.update(teacher_predictions, labels)
                self.log_dict(self.val_teacher_metrics, batch_size=batch_size)
            if self.num_labels > 1:
                self.val_agreement.update(student_predictions, teacher_predictions)
                self.log_dict(self.val_agreement, batch_size=batch_size)

    def _log_token_losses(self, loss_inputs: LossInputs, batch_size: int) -> None:
        """Masked-LM cross-entropy of both models on the masked tokens (``val/mlm_ce``,
        ``val/teacher/mlm_ce``), whatever the loss terms: the report's reference for the teacher."""
        if self.task != "masked_lm" or loss_inputs.labels is None:
            return
        tokens = int(loss_inputs.labels.numel())
        for prefix, outputs in (("val/", loss_inputs.student), ("val/teacher/", loss_inputs.teacher)):
            if outputs is not None and outputs.logits is not None:
                value = hard_label_cross_entropy(outputs.logits, loss_inputs.labels)
                self.log(f"{prefix}mlm_ce", value, batch_size=max(tokens, 1), sync_dist=True)

    # -- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self):
        parameters = [parameter for parameter in self.parameters() if parameter.requires_grad]
        optimizer = self.optimizer_factory(parameters)
        if self.scheduler_factory is None:
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(
            optimizer=optimizer,
            num_warmup_steps=int(self.warmup_ratio * total_steps),
            num_training_steps=total_steps,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

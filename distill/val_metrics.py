"""What :class:`~distill.module.DistillationModule` logs at each validation step besides the loss:
the student's metrics, each teacher's, the ensemble's, and the student's agreement with its teacher.

Names: ``val/<metric>`` (student), ``val/teacher/<metric>`` (the one teacher),
``val/teacher/<name>/<metric>`` and ``val/ensemble/<metric>`` (several teachers), and the share of
examples where the student predicts its teacher's class, ``val/agreement/teacher`` (one teacher) or
``val/agreement/ensemble`` (several). The agreement names were ``val/teacher_accuracy`` and
``val/ensemble_accuracy`` before; they read as the teacher's own accuracy, so they were renamed, and
:func:`agreement_score` reads both, for the metrics of older runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from distill.losses import LossInputs
from distill.losses.ensemble import ensemble_logits, ensemble_predictions
from distill.losses.logits import hard_label_cross_entropy

#: Token tasks: the name of the models' cross-entropy on the scored eval tokens.
TOKEN_CE_METRICS = {"masked_lm": "mlm_ce", "causal_lm": "lm_ce", "seq2seq_lm": "lm_ce"}
from distill.metrics import build_metrics

if TYPE_CHECKING:
    from distill.module import DistillationModule

#: The student's agreement with its one teacher, and with the ensemble of several.
AGREEMENT_TEACHER = "val/agreement/teacher"
AGREEMENT_ENSEMBLE = "val/agreement/ensemble"
#: The agreement names logged before the rename (``metrics.csv`` of older runs): new name -> old.
LEGACY_AGREEMENT = {AGREEMENT_TEACHER: "val/teacher_accuracy", AGREEMENT_ENSEMBLE: "val/ensemble_accuracy"}


def agreement_score(scores: Mapping[str, Any]) -> float | None:
    """The student's agreement with its teacher (or ensemble) from logged ``scores``, under the
    current name or the one older runs logged; ``None`` when absent."""
    for name in (AGREEMENT_TEACHER, AGREEMENT_ENSEMBLE, *LEGACY_AGREEMENT.values()):
        if name in scores and scores[name] is not None:
            return float(scores[name])
    return None


def _agreement(num_labels: int, reference: str) -> MetricCollection:
    """Micro accuracy of the student's predictions against ``reference``'s, as ``val/agreement/<reference>``."""
    return MetricCollection({reference: MulticlassAccuracy(num_classes=num_labels, average="micro")}, prefix="val/agreement/")


def register_val_metrics(
    module: DistillationModule, metrics: list[str], num_labels: int, has_teacher: bool, teacher_names: list[str]
) -> None:
    """Register on ``module`` the metric collections its validation steps update (registered, so they
    move with it to the device). ``teacher_names``: the ensemble's teachers (empty with one or none)."""
    module.val_metrics = build_metrics(metrics, num_labels).clone(prefix="val/") if metrics else None
    if has_teacher and module.classification:
        module.val_teacher_metrics = build_metrics(metrics, num_labels).clone(prefix="val/teacher/")
        if num_labels > 1:
            module.val_agreement = _agreement(num_labels, "teacher")
    if teacher_names and module.classification and metrics:
        module.val_teachers_metrics = nn.ModuleDict(
            {name: build_metrics(metrics, num_labels).clone(prefix=f"val/teacher/{name}/") for name in teacher_names}
        )
        module.val_ensemble_metrics = build_metrics(metrics, num_labels).clone(prefix="val/ensemble/")
        if num_labels > 1:
            module.val_agreement = _agreement(num_labels, "ensemble")


def predictions(logits: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Class ids ``(B,)`` from logits ``(B, C)``; the prediction itself for regression (``C == 1``)."""
    return logits.squeeze(-1).float() if num_labels == 1 else logits.argmax(-1)


def log_classification_metrics(
    module: DistillationModule, loss_inputs: LossInputs, per_teacher: dict[str, LossInputs], batch_size: int
) -> None:
    """The student's metrics, the teacher's (or each teacher's and the ensemble's) and the agreement."""
    student_predictions = predictions(loss_inputs.student.logits, module.num_labels)
    labels = loss_inputs.labels
    if module.ensemble is not None:
        _log_ensemble_metrics(module, per_teacher, student_predictions, labels, batch_size)
        return
    if labels is not None and module.val_metrics is not None:
        module.val_metrics.update(student_predictions, labels)
        module.log_dict(module.val_metrics, batch_size=batch_size, prog_bar=True)
    if loss_inputs.teacher is not None:
        teacher_predictions = predictions(loss_inputs.teacher.logits, module.num_labels)
        if labels is not None and module.val_metrics is not None:
            module.val_teacher_metrics.update(teacher_predictions, labels)
            module.log_dict(module.val_teacher_metrics, batch_size=batch_size)
        if module.num_labels > 1:
            module.val_agreement.update(student_predictions, teacher_predictions)
            module.log_dict(module.val_agreement, batch_size=batch_size)


def _log_ensemble_metrics(module: DistillationModule, per_teacher, student_predictions, labels, batch_size: int) -> None:
    """Each teacher's and the ensemble's metrics (mixture at T = 1), and the student's agreement
    with the ensemble."""
    if labels is not None and module.val_metrics is not None:
        module.val_metrics.update(student_predictions, labels)
        module.log_dict(module.val_metrics, batch_size=batch_size, prog_bar=True)
    if not per_teacher:
        return
    names = list(per_teacher)
    logits = [per_teacher[name].teacher.logits for name in names]
    weights = [module.ensemble.weights[name] for name in names]
    if module.num_labels == 1:
        ensemble = ensemble_predictions(logits, weights)
    else:
        ensemble = ensemble_logits(logits, weights, 1.0)
    ensemble_predicted = predictions(ensemble, module.num_labels)
    if labels is not None and module.val_metrics is not None:
        for name, teacher_logits in zip(names, logits):
            module.val_teachers_metrics[name].update(predictions(teacher_logits, module.num_labels), labels)
            module.log_dict(module.val_teachers_metrics[name], batch_size=batch_size)
        module.val_ensemble_metrics.update(ensemble_predicted, labels)
        module.log_dict(module.val_ensemble_metrics, batch_size=batch_size)
    if module.num_labels > 1 and module.val_metrics is not None:
        module.val_agreement.update(student_predictions, ensemble_predicted)
        module.log_dict(module.val_agreement, batch_size=batch_size)


def log_token_losses(
    module: DistillationModule, loss_inputs: LossInputs, per_teacher: dict[str, LossInputs], batch_size: int
) -> None:
    """Cross-entropy of the models on the scored tokens, whatever the loss terms: the report's
    reference for the teacher. Masked LM: ``val/mlm_ce`` on the masked tokens; causal LM:
    ``val/lm_ce`` on the next tokens (its exp is the perplexity); ``val/teacher/...`` and
    ``val/teacher/<name>/...`` with several teachers."""
    name = TOKEN_CE_METRICS.get(module.task)
    if name is None or loss_inputs.labels is None:
        return
    tokens = int(loss_inputs.labels.numel())
    models = [("val/", loss_inputs.student)]
    if module.ensemble is None:
        models.append(("val/teacher/", loss_inputs.teacher))
    models += [(f"val/teacher/{name}/", inputs.teacher) for name, inputs in per_teacher.items()]
    for prefix, outputs in models:
        if outputs is not None and outputs.logits is not None:
            value = hard_label_cross_entropy(outputs.logits, loss_inputs.labels)
            module.log(f"{prefix}{name}", value, batch_size=max(tokens, 1), sync_dist=True)

"""Losses on output logits: soft-target KD, hard-label cross-entropy, regression MSE."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.losses.base import LossInputs, LossTerm, masked_mean


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(
            f"loss.temperature must be > 0, got {temperature}; typical values are 1, 2, 4 or 8"
        )


def soft_target_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Soft-target knowledge distillation (Hinton et al. 2015, arXiv:1503.02531).

    .. math::
        T^2 \, \frac{1}{|M|} \sum_{i \in M}
        \mathrm{KL}\big(\sigma(z^t_i / T) \,\|\, \sigma(z^s_i / T)\big)

    The :math:`T^2` factor keeps the gradient scale of this term roughly independent of
    :math:`T` (the gradient of the softened KL falls as :math:`1/T^2`), so its weight against the
    hard-label term need not be retuned when the temperature changes.

    Computed in float32 log space whatever the input dtype (bf16 KL has percent-level errors).

    Args:
        student_logits: ``(..., V)``.
        teacher_logits: ``(..., V)``, same shape; treated as a constant.
        temperature: ``T > 0``.
        mask: ``(...)`` bool, True where the position counts (token-level logits); ``None`` counts
            every row. An all-false mask gives 0, never NaN.

    Returns:
        fp32 scalar.
    """
    _check_temperature(temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; the models must share the label set/vocabulary"
        )
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    # KL(p_t || p_s) per position = sum_v p_t (log p_t - log p_s)
    kl = F.kl_div(student_log_probs, teacher_log_probs, log_target=True, reduction="none").sum(-1)
    return masked_mean(kl, mask) * temperature**2


def hard_label_cross_entropy(
    student_logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    r"""Cross-entropy with the gold labels, in float32.

    .. math:: -\frac{1}{|M|} \sum_{i \in M} \log \sigma(z^s_i)_{y_i}, \quad M = \{i : y_i \ne \text{ignore}\}

    Shapes: logits ``(..., C)``; labels ``(...)`` int64. All-ignored labels give 0, never NaN.
    """
    flat_logits = student_logits.float().reshape(-1, student_logits.size(-1))
    flat_labels = labels.reshape(-1)
    per_position = F.cross_entropy(flat_logits, flat_labels, ignore_index=ignore_index, reduction="none")
    return masked_mean(per_position, flat_labels != ignore_index)


def regression_mse(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""Mean squared error for regression heads (``num_labels: 1``), in float32.

    .. math:: \frac{1}{B} \sum_i (\hat y_i - y_i)^2

    Shapes: predictions ``(B, 1)`` or ``(B,)``; targets ``(B,)``.
    """
    return F.mse_loss(predictions.float().reshape(-1), targets.float().reshape(-1))


class _SoftenedLogitTerm(LossTerm):
    """A term on temperature-softened teacher and student logits; the composer sets ``temperature``."""

    uses_teacher = True
    uses_temperature = True
    uses_class_logits = True

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = float(temperature)

    @staticmethod
    def function(student_logits, teacher_logits, temperature, mask):  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return self.function(inputs.student.logits, inputs.teacher.logits, self.temperature, inputs.logit_mask)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class SoftTargetKL(_SoftenedLogitTerm):
    """Module form of :func:`soft_target_kl`."""

    formula = "KL(softmax(z_t/T) || softmax(z_s/T))·T²"
    function = staticmethod(soft_target_kl)


class HardLabelCE(LossTerm):
    """Module form of :func:`hard_label_cross_entropy`."""

    uses_labels = True
    uses_class_logits = True
    formula = "CE(z_s, y)"

    def __init__(self, ignore_index: int = -100) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return hard_label_cross_entropy(inputs.student.logits, inputs.labels, self.ignore_index)


class RegressionMSE(LossTerm):
    """Module form of :func:`regression_mse`: the student's prediction against the gold score."""

    uses_labels = True
    uses_regression_head = True
    formula = "MSE(z_s, y)"

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return regression_mse(inputs.student.logits, inputs.labels)


class TeacherMSE(LossTerm):
    """Soft target for regression: MSE between student and teacher predictions (Ba & Caruana 2014)."""

    uses_teacher = True
    uses_regression_head = True
    formula = "MSE(z_s, z_t)"

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return regression_mse(inputs.student.logits, inputs.teacher.logits.detach())


def logit_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""MSE between logits (Ba & Caruana 2014, arXiv:1312.6184), an alternative to soft-target KL.

    .. math:: \frac{1}{|M|\,V} \sum_{i \in M} \lVert z^s_i - z^t_i \rVert^2

    Shapes: logits ``(..., V)``; mask ``(...)`` or ``None``. Float32; no temperature.
    """
    per_position = (student_logits.float() - teacher_logits.detach().float()).pow(2).mean(-1)
    return masked_mean(per_position, mask)


def soft_cross_entropy(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Soft cross-entropy of TinyBERT's prediction layer (Jiao et al. 2020, arXiv:1909.10351).

    .. math:: -\frac{1}{|M|} \sum_{i \in M} \sum_v \sigma(z^t_i/T)_v \log \sigma(z^s_i/T)_v

    It equals :func:`soft_target_kl` / T² plus the teacher's entropy (a constant), so its gradient
    is the KL's without the T² rescaling, as in the paper. Float32 log space.
    """
    _check_temperature(temperature)
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_probs = F.softmax(teacher_logits.detach().float() / temperature, dim=-1)
    return masked_mean(-(teacher_probs * student_log_probs).sum(-1), mask)


class LogitMSE(LossTerm):
    """Module form of :func:`logit_mse`."""

    uses_teacher = True
    uses_class_logits = True
    formula = "MSE(z_s, z_t)"

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return logit_mse(inputs.student.logits, inputs.teacher.logits, inputs.logit_mask)


class SoftCrossEntropy(_SoftenedLogitTerm):
    """Module form of :func:`soft_cross_entropy`."""

    formula = "-sum softmax(z_t/T) log softmax(z_s/T)"
    function = staticmethod(soft_cross_entropy)

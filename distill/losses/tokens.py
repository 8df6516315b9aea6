r"""Token-level distillation losses for causal LMs, computed in chunks of rows.

A causal LM's logits reach the losses reduced to the selected positions: student ``(N, V)`` (with
grad) and teacher ``(N, V)`` (a constant), with ``N`` in the thousands and ``V`` in the tens of
thousands (49,152 for SmolLM2). Written naively, a loss on them holds several ``(N, V)`` float32
tensors at once (both log-probabilities, the pointwise terms, their gradients): gigabytes.

Three divergences between :math:`p_t = \sigma(z^t / T)` and :math:`p_s = \sigma(z^s / T)`, each
averaged over the ``N`` rows and multiplied by :math:`T^2` (so the gradient scale does not fall
as :math:`1/T^2`, as in :func:`~distill.losses.soft_target_kl`):

* :func:`token_forward_kl`: :math:`\mathrm{KL}(p_t \| p_s)`, mean-seeking (Hinton et al. 2015);
* :func:`token_reverse_kl`: :math:`\mathrm{KL}(p_s \| p_t)`, mode-seeking (Gu et al. 2024,
  MiniLLM; Agarwal et al. 2024, GKD);
* :func:`generalized_jsd`: GKD's generalized Jensen-Shannon divergence, between the two.

**Chunking** (``chunk_size``) and the analytic gradients: :mod:`distill.losses.chunked`.
"""

from __future__ import annotations

import torch

from distill.losses.base import LossInputs, LossTerm
from distill.losses.chunked import _check_beta, _check_chunk_size, _token_loss
from distill.losses.logits import _check_temperature
from distill.losses.topk import TopKLogits


def token_forward_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | TopKLogits,
    temperature: float,
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""Forward KL on token rows, soft-target KD (Hinton et al. 2015, arXiv:1503.02531).

    .. math::
        T^2 \, \frac{1}{N} \sum_{i=1}^{N}
        \mathrm{KL}\big(\sigma(z^t_i / T) \,\|\, \sigma(z^s_i / T)\big)

    The same value as :func:`~distill.losses.soft_target_kl` without a mask; mean-seeking: the
    student is pushed to cover every token the teacher gives mass to. Computed in float32 log space
    whatever the input dtype, ``chunk_size`` rows at a time (see the module docstring).

    Args:
        student_logits: ``(N, V)`` (or ``(..., V)``, flattened), with grad; rows are the selected
            positions already (no mask).
        teacher_logits: ``(N, V)``, same shape, any float dtype; treated as a constant. Or a
            stored top-k teacher (:class:`~distill.losses.topk.TopKLogits`, rows ``(N,)``, its tail
            at ``temperature``): then the coarsened KL of :mod:`distill.losses.topk`, which equals
            this one when ``k = V``.
        temperature: ``T > 0``.
        chunk_size: rows per chunk; ``None`` for all rows at once.

    Returns:
        fp32 scalar (fp64 for fp64 inputs); 0 with a zero gradient when ``N = 0``.
    """
    return _token_loss("forward", student_logits, teacher_logits, temperature, 0.0, chunk_size)


def token_reverse_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""Reverse KL on token rows (Gu et al. 2024, MiniLLM, arXiv:2306.08543; Agarwal et al. 2024,
    GKD, arXiv:2306.13649).

    .. math::
        T^2 \, \frac{1}{N} \sum_{i=1}^{N}
        \mathrm{KL}\big(\sigma(z^s_i / T) \,\|\, \sigma(z^t_i / T)\big)

    Mode-seeking: the student is pushed to put its mass where the teacher's is large rather than to
    cover the whole teacher distribution, which suits a small student of a generative teacher.
    Float32 log space, ``chunk_size`` rows at a time; arguments and result as
    :func:`token_forward_kl`.
    """
    return _token_loss("reverse", student_logits, teacher_logits, temperature, 1.0, chunk_size)


def generalized_jsd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    beta: float,
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""Generalized Jensen-Shannon divergence of GKD (Agarwal et al. 2024, arXiv:2306.13649, Eq. 1).

    With :math:`p_t = \sigma(z^t/T)`, :math:`p_s = \sigma(z^s/T)` and the mixture
    :math:`m = \beta\, p_t + (1-\beta)\, p_s`, for :math:`0 < \beta < 1`:

    .. math::
        T^2 \, \frac{1}{N} \sum_{i=1}^{N}
        \Big[\beta\, \mathrm{KL}(p_{t,i} \,\|\, m_i) + (1-\beta)\, \mathrm{KL}(p_{s,i} \,\|\, m_i)\Big]

    and at the ends, by definition, :math:`\beta = 0` gives the forward KL
    :math:`\mathrm{KL}(p_t \| p_s)` (:func:`token_forward_kl`) and :math:`\beta = 1` the reverse KL
    :math:`\mathrm{KL}(p_s \| p_t)` (:func:`token_reverse_kl`), exactly.

    This is the convention of the paper (P = teacher, Q = student) and of TRL's
    ``GKDTrainer.generalized_jsd_loss`` (``trl/experimental/gkd/gkd_trainer.py``): mixture
    ``β·p_t + (1−β)·p_s``, loss ``β·KL(p_t||m) + (1−β)·KL(p_s||m)``, ``beta=0`` forward KL and
    ``beta=1`` reverse KL. Note the ends are *not* the limits of the formula, which tends to 0
    there: near 0 it behaves as :math:`\beta \cdot \mathrm{KL}(p_t\|p_s)`, near 1 as
    :math:`(1-\beta) \cdot \mathrm{KL}(p_s\|p_t)` (so its gradients resemble forward / reverse
    KL's, Huszár 2015, but its scale shrinks as β approaches an end: β = 0.01 gives about a hundredth
    of β = 0's loss). Unlike TRL, the loss is multiplied by :math:`T^2` like the other KD terms.

    The mixture is formed in log space (``logaddexp(log β + log p_t, log(1−β) + log p_s)``), in
    float32 whatever the input dtype, ``chunk_size`` rows at a time.

    Args:
        beta: in ``[0, 1]``; ``ValueError`` naming ``loss.beta`` otherwise.
        Others as :func:`token_forward_kl`.
    """
    _check_beta(beta)
    return _token_loss("jsd", student_logits, teacher_logits, temperature, beta, chunk_size)


class _TokenLogitTerm(LossTerm):
    """A token-level term on temperature-softened logits; the composer sets ``temperature``."""

    uses_teacher = True
    uses_temperature = True
    uses_class_logits = True

    def __init__(self, temperature: float = 1.0, chunk_size: int | None = None) -> None:
        super().__init__()
        _check_temperature(temperature)
        _check_chunk_size(chunk_size)
        self.temperature = float(temperature)
        self.chunk_size = chunk_size

    def _logits(self, inputs: LossInputs) -> tuple[torch.Tensor, torch.Tensor]:
        student, teacher = inputs.student.logits, inputs.teacher.logits
        if inputs.logit_mask is not None:  # rows selected once, here
            mask = inputs.logit_mask.bool()
            student, teacher = student[mask], teacher[mask]
        return student, teacher

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, chunk_size={self.chunk_size}"


class TokenForwardKL(_TokenLogitTerm):
    """Module form of :func:`token_forward_kl`."""

    formula = "KL(softmax(z_t/T) || softmax(z_s/T))·T² per token"

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        student, teacher = self._logits(inputs)
        return token_forward_kl(student, teacher, self.temperature, self.chunk_size)


class TokenReverseKL(_TokenLogitTerm):
    """Module form of :func:`token_reverse_kl`."""

    formula = "KL(softmax(z_s/T) || softmax(z_t/T))·T² per token"

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        student, teacher = self._logits(inputs)
        return token_reverse_kl(student, teacher, self.temperature, self.chunk_size)


class GeneralizedJSD(_TokenLogitTerm):
    """Module form of :func:`generalized_jsd`."""

    def __init__(self, temperature: float = 1.0, beta: float = 0.5, chunk_size: int | None = None) -> None:
        super().__init__(temperature, chunk_size)
        _check_beta(beta)
        self.beta = float(beta)

    @property
    def formula(self) -> str:
        return f"JSD_β(softmax(z_t/T) || softmax(z_s/T))·T² per token, β={self.beta:g}"

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        student, teacher = self._logits(inputs)
        return generalized_jsd(student, teacher, self.temperature, self.beta, self.chunk_size)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, beta={self.beta}, chunk_size={self.chunk_size}"

r"""Soft-target KL from a teacher stored as its top-k logits plus the mass of the rest (the tail).

A token-level teacher has a distribution over a whole vocabulary (49k entries for SmolLM2); a
teacher-output cache keeps, per position, the ``k`` largest logits, their indices and the
log-sum-exp of the others at temperature :math:`T`:

.. math::
    \ell_{tail} = \log \sum_{j \notin K} e^{z^t_j / T}

so the teacher's tail mass :math:`p^t_{tail} = e^{\ell_{tail} - L}`, with
:math:`L = \operatorname{logaddexp}(\log\sum_{i\in K} e^{z^t_i/T}, \ell_{tail})`, is known exactly.

**The choice, made explicit.** The tail's *shape* is not stored, so the full KL cannot be
computed. We compute the exact KL between the two distributions coarsened to ``k + 1`` outcomes
(the ``k`` kept tokens and one "any other token" bucket):

.. math::
    T^2 \Big[\sum_{i \in K} p^t_i \log\frac{p^t_i}{p^s_i}
        + p^t_{tail} \log\frac{p^t_{tail}}{p^s_{tail}}\Big],
    \qquad p^s_{tail} = \sum_{j \notin K} p^s_j .

By the data-processing inequality it is never above the full KL, equals it when ``k = V`` (the
tail is empty) and, unlike renormalising the top-k (DistillKit's default), never pushes the
student to put the tail's mass on the kept tokens. ``tail_logsumexp`` depends on :math:`T`: a cache
stores it for the temperatures it was built for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.losses.base import masked_mean


def top_k_with_tail(logits: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a cache stores of ``logits`` ``(..., V)``: the ``k`` largest logits ``(..., k)`` (raw,
    not divided by ``T``), their indices ``(..., k)`` and the tail's log-sum-exp of ``z / T`` ``(...)``
    (``-inf`` when ``k = V``). Computed in float32."""
    logits = logits.float()
    values, indices = logits.topk(k, dim=-1)
    tail = (logits / temperature).scatter(-1, indices, float("-inf"))
    return values, indices, tail.logsumexp(dim=-1)


def top_k_soft_target_kl(
    student_logits: torch.Tensor,
    teacher_values: torch.Tensor,
    teacher_indices: torch.Tensor,
    teacher_tail_logsumexp: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The coarsened soft-target KL of the module docstring, times :math:`T^2`, averaged over rows.

    Args:
        student_logits: ``(..., V)``, with grad.
        teacher_values: ``(..., k)`` the teacher's largest logits (raw).
        teacher_indices: ``(..., k)`` their vocabulary indices.
        teacher_tail_logsumexp: ``(...)`` log-sum-exp of the other logits divided by ``temperature``.
        temperature: ``T > 0``, the one the tail was stored for.
        mask: ``(...)`` bool rows that count, or ``None`` for all.

    Returns:
        fp32 scalar.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    teacher_scaled = teacher_values.detach().float() / temperature
    tail = teacher_tail_logsumexp.detach().float()
    total = torch.logaddexp(teacher_scaled.logsumexp(-1), tail)  # log Σ_all e^{z_t/T}
    teacher_log_kept = teacher_scaled - total.unsqueeze(-1)  # (..., k)
    teacher_log_tail = tail - total  # (...)

    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (..., V)
    student_log_kept = student_log_probs.gather(-1, teacher_indices)
    student_log_tail = student_log_probs.scatter(-1, teacher_indices, float("-inf")).logsumexp(-1)

    kept = (teacher_log_kept.exp() * (teacher_log_kept - student_log_kept)).sum(-1)
    tail_mass = teacher_log_tail.exp()
    # 0·log(0/x) = 0: an empty tail (k = V) adds nothing, not NaN.
    tail_term = torch.where(tail_mass > 0, tail_mass * (teacher_log_tail - student_log_tail), torch.zeros_like(tail_mass))
    return masked_mean(kept + tail_term, mask) * temperature**2

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

Its gradient in :math:`s = z^s / T` (per row, before :math:`T^2` and the mean) is
:math:`q - r`, with :math:`q = \sigma(s)` and the *effective target* :math:`r_i = p^t_i` on the kept
tokens and :math:`r_j = p^t_{tail}\, q_j / q_{tail}` on the others: the tail's mass is spread over
the other tokens as the student itself spreads it. :func:`top_k_chunk_terms` computes value and
gradient together for the chunked pass of :mod:`distill.losses.chunked` (``token_forward_kl`` with a
:class:`TopKLogits` teacher).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.losses.base import TopKLogits, masked_mean

__all__ = ["TopKLogits", "tail_logsumexp", "top_k_chunk_terms", "top_k_soft_target_kl", "top_k_with_tail"]


def top_k_with_tail(logits: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a cache stores of ``logits`` ``(..., V)``: the ``k`` largest logits ``(..., k)`` (raw,
    not divided by ``T``), their indices ``(..., k)`` and the tail's log-sum-exp of ``z / T`` ``(...)``
    (``-inf`` when ``k = V``). Computed in float32."""
    logits = logits.float()
    values, indices = logits.topk(k, dim=-1)
    return values, indices, tail_logsumexp(logits, indices, temperature)


def tail_logsumexp(logits: torch.Tensor, indices: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log Σ_{j ∉ indices} exp(z_j / T)`` per row of ``logits`` ``(..., V)`` (float32; ``-inf`` when
    ``indices`` covers the row): a cache stores one per temperature it serves."""
    return (logits.float() / temperature).scatter(-1, indices, float("-inf")).logsumexp(dim=-1)


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


def top_k_chunk_terms(
    log_q: torch.Tensor,
    values: torch.Tensor,
    indices: torch.Tensor,
    tail_logsumexp: torch.Tensor,
    temperature: float,
    want_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-row coarsened KLs ``(C,)`` (without T²) of one chunk, and, when ``want_grad``, their
    gradient in ``student / temperature`` ``(C, V)``: ``q - r`` (module docstring).

    ``log_q`` is the chunk's student log-probabilities at ``temperature`` ``(C, V)`` (the chunked
    pass's own buffer, overwritten in place); ``values`` ``(C, k)`` raw teacher logits in the compute
    dtype, ``indices`` ``(C, k)`` int64, ``tail_logsumexp`` ``(C,)`` at ``temperature``.
    """
    values = values / temperature if temperature != 1.0 else values
    tail_logsumexp = tail_logsumexp.to(values.dtype)
    total = torch.logaddexp(values.logsumexp(-1), tail_logsumexp)  # log Σ_all e^{z_t/T}
    teacher_log_kept = values - total.unsqueeze(-1)  # (C, k)
    teacher_log_tail = tail_logsumexp - total  # (C,)
    log_q_kept = log_q.gather(-1, indices)  # (C, k)
    log_q_tail = log_q.scatter(-1, indices, float("-inf")).logsumexp(-1)  # (C,)
    p_kept = teacher_log_kept.exp()
    p_tail = teacher_log_tail.exp()
    kept = (p_kept * (teacher_log_kept - log_q_kept)).sum(-1)
    # 0·log(0/x) = 0: an empty tail (k = V) adds nothing, not NaN.
    empty = p_tail == 0
    tail = torch.where(empty, torch.zeros_like(p_tail), p_tail * (teacher_log_tail - log_q_tail))
    rows = kept + tail
    if not want_grad:
        return rows, None
    # q − r. On the others r_j = p_tail·q_j/q_tail = exp(log q_j + δ), δ = log p_tail − log q_tail,
    # which never overflows (log q_j ≤ log q_tail); an empty tail has δ = −inf (r_j = 0).
    delta = torch.where(empty, torch.full_like(p_tail, float("-inf")), teacher_log_tail - log_q_tail)
    spread = torch.add(log_q, delta.unsqueeze(-1)).exp_()
    q_kept = log_q_kept.exp()
    grad = log_q.exp_().sub_(spread)
    del spread
    return rows, grad.scatter_(-1, indices, q_kept - p_kept)

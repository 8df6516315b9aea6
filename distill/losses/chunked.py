r"""The chunked pass behind the token-level losses (:mod:`distill.losses.tokens`).

**Chunking.** With ``chunk_size=C`` the rows are processed ``C`` at a time by one
:class:`torch.autograd.Function`: each chunk is upcast to float32, its per-row losses are computed
and, in the same pass, the analytic gradient of the loss with respect to that chunk of student
logits is written into one preallocated tensor of the student logits' dtype and shape. The
backward only scales that tensor by the incoming gradient (in place). So the memory the loss adds
is that one ``(N, V)`` gradient (which any loss must return) plus a few ``(C, V)`` float32 chunk
buffers, instead of several ``(N, V)`` float32 tensors. ``chunk_size=None`` is the same code with
``C = N``. Value and gradient do not depend on ``C``: every row is computed on its own and the
per-row losses are summed once, at the end.

Gradients (per row, with :math:`a = \log p_s`, :math:`b = \log p_t`, :math:`s = z^s / T`; the
gradient in :math:`z^s` is that in :math:`s` divided by :math:`T`):

.. math::
    \frac{\partial\,\mathrm{KL}(p_t\|p_s)}{\partial s} = p_s - p_t, \qquad
    \frac{\partial\,\mathrm{KL}(p_s\|p_t)}{\partial s} = p_s \odot \big(a - b - \mathrm{KL}(p_s\|p_t)\big),

    \frac{\partial\,\mathrm{JSD}_\beta}{\partial s}
        = (1-\beta)\, p_s \odot \big(a - \log m - \mathrm{KL}(p_s\|m)\big),
    \qquad m = \beta p_t + (1-\beta) p_s .

(For the JSD, the terms through :math:`\partial \log m / \partial a` cancel:
:math:`\partial/\partial a_k = (1-\beta) p_{s,k} (a_k - \log m_k)`, then the softmax Jacobian.)
A stored top-k teacher (:class:`~distill.losses.topk.TopKLogits`, kind ``top_k``) gives the
coarsened forward KL, gradient :math:`p_s - r` (:func:`~distill.losses.topk.top_k_chunk_terms`).

Without a graph to build (``torch.no_grad()``, validation, student logits without grad) only the
values are computed: no gradient buffer. A backward run a second time over the same graph
(``retain_graph=True``, ``gradcheck``) recomputes the gradient chunk by chunk from the saved
logits, so it stays correct; only the first one is free. The loss is differentiable once (no
double backward).

Float32 accuracy: each row's sums run over ``V`` terms of one row, so the loss is closer to a
float64 computation than the naive full-tensor version (``scripts/bench_token_kl.py`` prints both
errors). On CPU, chunks of 32 MiB or more are mmapped afresh per chunk by glibc; smaller chunks
(64 rows at ``V`` = 49,152) run faster there.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from distill.losses.logits import _check_temperature
from distill.losses.topk import TopKLogits, top_k_chunk_terms

_KINDS = ("forward", "reverse", "jsd", "top_k")


def _check_beta(beta: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(
            f"loss.beta must be in [0, 1] (0: forward KL, 1: reverse KL, in between the generalized "
            f"JSD), got {beta}"
        )


def _check_chunk_size(chunk_size: int | None) -> None:
    if chunk_size is None:
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(
            f"loss.chunk_size must be a positive number of rows per chunk, or null for all rows at "
            f"once; got {chunk_size!r}"
        )


def _log_softmax_(x: torch.Tensor) -> torch.Tensor:
    """``log_softmax(x, -1)`` in place (the same steps: subtract the row max, then the log of the
    sum of exponentials), so a chunk needs no second buffer for it."""
    x.sub_(x.amax(-1, keepdim=True))
    return x.sub_(x.exp().sum(-1, keepdim=True).log_())


def _chunk_terms(
    kind: str, student: torch.Tensor, teacher: tuple[torch.Tensor, ...], temperature: float, beta: float,
    want_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-row losses ``(C,)`` (without T²) of one chunk of rows, and, when ``want_grad``, the
    gradient of their sum with respect to ``student / temperature`` ``(C, V)``.

    ``student`` and the teacher's ``(C, V)`` logits (``teacher[0]``) are fresh buffers in the
    compute dtype, owned here: they are overwritten in place, so a chunk holds at most four
    ``(C, V)`` buffers (three for the KLs). ``kind="top_k"``: ``teacher`` is a stored top-k teacher
    (values, indices, tail log-sum-exp; :func:`~distill.losses.topk.top_k_chunk_terms`).
    ``0 · log 0`` counts as 0 (a token either side rules out gives no NaN).
    """
    if temperature != 1.0:
        student.div_(temperature)
    log_s = _log_softmax_(student)  # a = log p_s
    if kind == "top_k":
        return top_k_chunk_terms(log_s, *teacher, temperature=temperature, want_grad=want_grad)
    (teacher,) = teacher
    if temperature != 1.0:
        teacher.div_(temperature)
    log_t = _log_softmax_(teacher)  # b = log p_t
    if kind == "jsd" and beta == 0.0:
        kind = "forward"
    elif kind == "jsd" and beta == 1.0:
        kind = "reverse"

    if kind == "forward":
        p_t = log_t.exp()
        rows = log_t.sub_(log_s).masked_fill_(p_t == 0, 0.0).mul_(p_t).sum(-1)  # Σ p_t (b − a)
        del log_t
        return rows, (log_s.exp_().sub_(p_t) if want_grad else None)  # p_s − p_t

    if kind == "reverse":
        p_s = log_s.exp()
        terms = log_s.sub_(log_t).masked_fill_(p_s == 0, 0.0).mul_(p_s)  # p_s (a − b)
        del log_t
        rows = terms.sum(-1)
        # p_s (a − b − KL), written as p_s (a − b) − p_s · KL into the same buffer
        return rows, (terms.addcmul_(p_s, rows.unsqueeze(-1), value=-1.0) if want_grad else None)

    # Generalized JSD, 0 < β < 1: the mixture in log space,
    # log m = logaddexp(log β + b, log(1−β) + a) = log(1−β) + logaddexp(b + log(β/(1−β)), a).
    log_m = torch.add(log_t, math.log(beta) - math.log1p(-beta))
    torch.logaddexp(log_m, log_s, out=log_m).add_(math.log1p(-beta))
    p_t = log_t.exp()
    teacher_part = log_t.sub_(log_m).masked_fill_(p_t == 0, 0.0).mul_(p_t).sum(-1)  # KL(p_t || m)
    del p_t, log_t
    p_s = log_s.exp()
    terms = log_s.sub_(log_m).masked_fill_(p_s == 0, 0.0).mul_(p_s)  # p_s (a − log m)
    del log_m
    student_part = terms.sum(-1)  # KL(p_s || m)
    rows = beta * teacher_part + (1.0 - beta) * student_part
    if not want_grad:
        return rows, None
    return rows, terms.addcmul_(p_s, student_part.unsqueeze(-1), value=-1.0).mul_(1.0 - beta)


def _compute_dtype(student: torch.Tensor, teacher: torch.Tensor) -> torch.dtype:
    """float32, or float64 when an input is float64 (so ``gradcheck`` can run)."""
    return torch.float64 if torch.float64 in (student.dtype, teacher.dtype) else torch.float32


def _chunk_of(part: torch.Tensor, start: int, stop: int, dtype: torch.dtype) -> torch.Tensor:
    """Rows ``start:stop`` of one teacher part: float parts as a fresh buffer in ``dtype``,
    indices as int64."""
    if part.is_floating_point():
        return part[start:stop].to(dtype, copy=True)
    return part[start:stop].long()


def _chunked_pass(
    kind: str,
    student: torch.Tensor,
    teacher: tuple[torch.Tensor, ...],
    temperature: float,
    beta: float,
    chunk_size: int,
    grad: torch.Tensor | None,
) -> torch.Tensor:
    """The mean per-row loss times T², and, when ``grad`` is given, its gradient in the student
    logits written into ``grad`` (the student's dtype), chunk by chunk."""
    rows = student.size(0)
    dtype = _compute_dtype(student, teacher[0])
    per_row = torch.empty(rows, dtype=dtype, device=student.device)
    # d(T² · mean)/dz = T²/N · (1/T) · d/ds
    scale = temperature / max(rows, 1)
    for start in range(0, rows, chunk_size):
        stop = min(start + chunk_size, rows)
        values, chunk_grad = _chunk_terms(
            kind,
            student[start:stop].to(dtype, copy=True),
            tuple(_chunk_of(part, start, stop, dtype) for part in teacher),
            temperature,
            beta,
            grad is not None,
        )
        per_row[start:stop] = values
        if grad is not None:
            grad[start:stop].copy_(chunk_grad.mul_(scale))
        del values, chunk_grad
    return per_row.sum() * (temperature**2 / max(rows, 1))


class _ChunkedTokenLoss(torch.autograd.Function):
    """The loss in forward with its gradient computed alongside; backward scales it in place."""

    @staticmethod
    def forward(ctx, student, kind, temperature, beta, chunk_size, *teacher):
        want_grad = ctx.needs_input_grad[0]
        grad = torch.empty_like(student) if want_grad else None
        value = _chunked_pass(kind, student, teacher, temperature, beta, chunk_size, grad)
        ctx.save_for_backward(student, *teacher)
        ctx.grad = grad
        ctx.settings = (kind, temperature, beta, chunk_size)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        student, *teacher = ctx.saved_tensors  # raises if the logits were changed in place since forward
        grad, ctx.grad = ctx.grad, None
        if grad is None:  # a second backward over a retained graph: recompute, chunk by chunk
            kind, temperature, beta, chunk_size = ctx.settings
            grad = torch.empty_like(student)
            _chunked_pass(kind, student, tuple(teacher), temperature, beta, chunk_size, grad)
        chunk_size = ctx.settings[3]
        if grad.dtype in (torch.float32, torch.float64):
            grad.mul_(grad_output.to(grad.dtype))
        else:  # bf16/fp16: scale in float32 so the loss weight is not rounded to 8 bits first
            factor = grad_output.float()
            for start in range(0, grad.size(0), chunk_size):
                block = grad[start : start + chunk_size]
                block.copy_(block.float().mul_(factor))
        return (grad, None, None, None, None, *(None for _ in teacher))


def _token_loss(
    kind: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | TopKLogits,
    temperature: float,
    beta: float,
    chunk_size: int | None,
) -> torch.Tensor:
    _check_temperature(temperature)
    _check_beta(beta)
    _check_chunk_size(chunk_size)
    if student_logits.dim() < 1:
        raise ValueError(f"student logits {tuple(student_logits.shape)}: need (..., V)")
    vocab = student_logits.size(-1)
    student = student_logits.reshape(-1, vocab)
    if isinstance(teacher_logits, TopKLogits):
        teacher = _top_k_parts(kind, student_logits, teacher_logits, temperature)
        kind = "top_k"
    elif student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; the models must share the vocabulary"
        )
    else:
        teacher = (teacher_logits.detach().reshape(-1, vocab),)
    settings = (kind, float(temperature), float(beta), max(student.size(0) if chunk_size is None else chunk_size, 1))
    if not (torch.is_grad_enabled() and student.requires_grad):
        # No graph to build (validation, no_grad): the value alone, no gradient buffer.
        kind, temperature, beta, chunk_size = settings
        return _chunked_pass(kind, student.detach(), teacher, temperature, beta, chunk_size, None)
    return _ChunkedTokenLoss.apply(student, *settings, *teacher)


def _top_k_parts(kind: str, student_logits: torch.Tensor, teacher: TopKLogits, temperature: float) -> tuple[torch.Tensor, ...]:
    """A stored top-k teacher's rows ``(values, indices, tail)``, checked against the loss: only the
    forward KL can be computed from it, at the temperature its tail was stored for."""
    if kind != "forward":
        raise ValueError(
            "a top-k teacher (a token-level teacher cache) stores the k largest logits and the tail's mass, "
            "enough for the forward KL (loss=token_kd) only; reverse KL and the JSD need the whole teacher "
            "distribution: run them with the online teacher (teacher_cache.enabled=false)"
        )
    if float(teacher.temperature) != float(temperature):
        raise ValueError(
            f"the top-k teacher's tail was stored at T={teacher.temperature:g}, the loss runs at T={temperature:g}; "
            "build the cache with this temperature among teacher_cache.temperatures"
        )
    if teacher.rows_shape != tuple(student_logits.shape[:-1]):
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and the top-k teacher's rows {teacher.rows_shape} differ"
        )
    rows = teacher.reshape_rows()
    return rows.values.detach(), rows.indices, rows.tail_logsumexp.detach()

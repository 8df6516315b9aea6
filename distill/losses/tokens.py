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

from distill.losses.base import LossInputs, LossTerm
from distill.losses.logits import _check_temperature

_KINDS = ("forward", "reverse", "jsd")


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
    kind: str, student: torch.Tensor, teacher: torch.Tensor, temperature: float, beta: float, want_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-row losses ``(C,)`` (without T²) of one chunk of rows, and, when ``want_grad``, the
    gradient of their sum with respect to ``student / temperature`` ``(C, V)``.

    ``student`` and ``teacher`` are fresh ``(C, V)`` buffers in the compute dtype, owned here: they
    are overwritten in place, so a chunk holds at most four ``(C, V)`` buffers (three for the KLs).
    ``0 · log 0`` counts as 0 (a token either side rules out gives no NaN).
    """
    if temperature != 1.0:
        student.div_(temperature)
        teacher.div_(temperature)
    log_s = _log_softmax_(student)  # a = log p_s
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


def _chunked_pass(
    kind: str,
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float,
    beta: float,
    chunk_size: int,
    grad: torch.Tensor | None,
) -> torch.Tensor:
    """The mean per-row loss times T², and, when ``grad`` is given, its gradient in the student
    logits written into ``grad`` (the student's dtype), chunk by chunk."""
    rows = student.size(0)
    dtype = _compute_dtype(student, teacher)
    per_row = torch.empty(rows, dtype=dtype, device=student.device)
    # d(T² · mean)/dz = T²/N · (1/T) · d/ds
    scale = temperature / max(rows, 1)
    for start in range(0, rows, chunk_size):
        stop = min(start + chunk_size, rows)
        values, chunk_grad = _chunk_terms(
            kind,
            student[start:stop].to(dtype, copy=True),
            teacher[start:stop].to(dtype, copy=True),
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
    def forward(ctx, student, teacher, kind, temperature, beta, chunk_size):
        want_grad = ctx.needs_input_grad[0]
        grad = torch.empty_like(student) if want_grad else None
        value = _chunked_pass(kind, student, teacher, temperature, beta, chunk_size, grad)
        ctx.save_for_backward(student, teacher)
        ctx.grad = grad
        ctx.settings = (kind, temperature, beta, chunk_size)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        student, teacher = ctx.saved_tensors  # raises if the logits were changed in place since forward
        grad, ctx.grad = ctx.grad, None
        if grad is None:  # a second backward over a retained graph: recompute, chunk by chunk
            kind, temperature, beta, chunk_size = ctx.settings
            grad = torch.empty_like(student)
            _chunked_pass(kind, student, teacher, temperature, beta, chunk_size, grad)
        chunk_size = ctx.settings[3]
        if grad.dtype in (torch.float32, torch.float64):
            grad.mul_(grad_output.to(grad.dtype))
        else:  # bf16/fp16: scale in float32 so the loss weight is not rounded to 8 bits first
            factor = grad_output.float()
            for start in range(0, grad.size(0), chunk_size):
                block = grad[start : start + chunk_size]
                block.copy_(block.float().mul_(factor))
        return grad, None, None, None, None, None


def _token_loss(
    kind: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    beta: float,
    chunk_size: int | None,
) -> torch.Tensor:
    _check_temperature(temperature)
    _check_beta(beta)
    _check_chunk_size(chunk_size)
    if student_logits.shape != teacher_logits.shape or student_logits.dim() < 1:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; the models must share the vocabulary"
        )
    vocab = student_logits.size(-1)
    student = student_logits.reshape(-1, vocab)
    teacher = teacher_logits.detach().reshape(-1, vocab)
    settings = (kind, float(temperature), float(beta), max(student.size(0) if chunk_size is None else chunk_size, 1))
    if not (torch.is_grad_enabled() and student.requires_grad):
        # No graph to build (validation, no_grad): the value alone, no gradient buffer.
        kind, temperature, beta, chunk_size = settings
        return _chunked_pass(kind, student.detach(), teacher, temperature, beta, chunk_size, None)
    return _ChunkedTokenLoss.apply(student, teacher, *settings)


def token_forward_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
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
        teacher_logits: ``(N, V)``, same shape, any float dtype; treated as a constant.
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

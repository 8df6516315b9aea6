"""Losses on hidden states."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.losses.base import LossInputs, LossTerm, masked_mean


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

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return cosine_hidden(
            inputs.student.hidden_states[self.student_layer],
            inputs.teacher.hidden_states[self.teacher_layer],
            inputs.attention_mask,
        )

    def extra_repr(self) -> str:
        return f"student_layer={self.student_layer}, teacher_layer={self.teacher_layer}"

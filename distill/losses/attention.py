"""Losses on self-attention: TinyBERT attention-score MSE, MiniLM attention and value relations.

They read each layer's query/key/value projections (``ModelOutputs.captured``, filled by forward
hooks), so the model keeps its fast attention kernel and never returns full attention maps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from distill.losses.base import LossInputs, LossTerm, ModelShape, masked_mean
from distill.losses.layer_map import resolve_layer_map


def split_heads(states: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, T, H)`` -> ``(B, heads, T, H / heads)``."""
    batch, length, width = states.shape
    return states.view(batch, length, heads, width // heads).transpose(1, 2)


def scaled_scores(first: torch.Tensor, second: torch.Tensor, heads: int) -> torch.Tensor:
    r"""Per-head scaled dot products :math:`A_h B_h^\top / \sqrt{d}` in float32: ``(B, heads, T, T)``."""
    first_heads = split_heads(first.float(), heads)
    second_heads = split_heads(second.float(), heads)
    return first_heads @ second_heads.transpose(-1, -2) / math.sqrt(first_heads.size(-1))


def _pair_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """``(B, 1, T, T)`` true where both the query and the key are real tokens."""
    real = attention_mask.bool()
    return (real[:, None, :, None] & real[:, None, None, :])


def attention_score_mse(
    student_scores: torch.Tensor, teacher_scores: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    r"""TinyBERT attention loss (Jiao et al. 2020, arXiv:1909.10351) for one pair of layers.

    .. math:: \frac{1}{h\,|P|} \sum_{k=1}^{h} \sum_{(i,j) \in P} (S^s_{k,ij} - S^t_{k,ij})^2

    on the pre-softmax scores :math:`S = QK^\top/\sqrt{d}`, over query/key pairs :math:`P` of real
    tokens only (padding never contributes). Head counts must match.

    Shapes: scores ``(B, heads, T, T)``; attention_mask ``(B, T)``.
    """
    valid = _pair_mask(attention_mask).expand_as(student_scores)
    return masked_mean((student_scores - teacher_scores.detach()).pow(2), valid)


def relation_kl(
    student_scores: torch.Tensor, teacher_scores: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    r"""KL between relation distributions, MiniLM style (Wang et al. 2020, arXiv:2002.10957 and
    MiniLMv2, arXiv:2012.15828), for one pair of layers.

    .. math:: \frac{1}{R\,|Q|} \sum_{r=1}^{R} \sum_{i \in Q}
              \mathrm{KL}\big(\mathrm{softmax}(S^t_{r,i\cdot}) \,\|\, \mathrm{softmax}(S^s_{r,i\cdot})\big)

    where the softmax runs over real keys only and :math:`Q` are the real query tokens. The
    relation scores :math:`S_r = A_r B_r^\top / \sqrt{d_r}` come from splitting each model's vectors
    into the same number :math:`R` of relation heads, so widths and head counts may differ.

    Shapes: scores ``(B, R, T, T)``; attention_mask ``(B, T)``. Float32 log space.
    """
    real = attention_mask.bool()
    key_is_real = real[:, None, None, :]
    student_log_probs = F.log_softmax(student_scores.float().masked_fill(~key_is_real, float("-inf")), dim=-1)
    teacher_log_probs = F.log_softmax(teacher_scores.detach().float().masked_fill(~key_is_real, float("-inf")), dim=-1)
    elementwise = teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)
    per_query = elementwise.masked_fill(~key_is_real, 0.0).sum(-1)  # (B, R, T)
    return masked_mean(per_query, real[:, None, :].expand_as(per_query))


def _attention_layer(hidden_index: int) -> int:
    """``hidden_states`` index m (1..L) -> 0-based transformer layer m - 1."""
    return hidden_index - 1


class AttentionScoreMSE(LossTerm):
    """TinyBERT attention-score MSE over mapped layers (``uniform`` by default), averaged over pairs.

    Embedding pairs (index 0) have no attention and are left out of named maps.
    """

    uses_teacher = True
    captures = ("query", "key")
    formula = "mean_pairs MSE(QK^T/sqrt(d)_s, QK^T/sqrt(d)_t)"

    def __init__(self, layer_map="uniform") -> None:
        super().__init__()
        self.layer_map = layer_map if isinstance(layer_map, str) else [list(pair) for pair in layer_map]
        self.pairs: list[tuple[int, int]] = []
        self.student_heads = self.teacher_heads = 0

    def bind(self, student: ModelShape, teacher: ModelShape | None) -> None:
        if teacher is None:
            return
        pairs = resolve_layer_map(self.layer_map, student.num_layers, teacher.num_layers)
        with_embeddings = [pair for pair in pairs if 0 in pair]
        if with_embeddings and not isinstance(self.layer_map, str):
            raise ValueError(f"layer_map pairs {with_embeddings} use index 0 (embeddings), which has no attention")
        self.pairs = [pair for pair in pairs if 0 not in pair]
        if student.num_heads != teacher.num_heads:
            raise ValueError(
                f"attention-score MSE compares heads one to one, but {student.name} has "
                f"{student.num_heads} heads and {teacher.name} {teacher.num_heads}; use MiniLMRelations "
                "(relation heads) for different head counts"
            )
        self.student_heads, self.teacher_heads = student.num_heads, teacher.num_heads

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        student, teacher = inputs.student.captured, inputs.teacher.captured
        total = 0.0
        for student_index, teacher_index in self.pairs:
            s, t = _attention_layer(student_index), _attention_layer(teacher_index)
            total = total + attention_score_mse(
                scaled_scores(student["query"][s], student["key"][s], self.student_heads),
                scaled_scores(teacher["query"][t], teacher["key"][t], self.teacher_heads),
                inputs.attention_mask,
            )
        return total / len(self.pairs)

    def extra_repr(self) -> str:
        return f"layer_map={self.layer_map}, pairs={self.pairs}"


class MiniLMRelations(LossTerm):
    r"""MiniLM self-attention relation KL plus value-relation KL on one pair of layers (last by default).

    .. math:: \mathcal{L} = \mathrm{KL}_{rel}(QK^\top) + \mathrm{KL}_{rel}(VV^\top)

    with ``relation_heads`` heads on both sides, which must divide both widths.
    """

    uses_teacher = True
    captures = ("query", "key", "value")
    formula = "KL_rel(QK^T) + KL_rel(VV^T)"

    def __init__(self, relation_heads: int = 12, student_layer: int = -1, teacher_layer: int = -1) -> None:
        super().__init__()
        self.relation_heads = int(relation_heads)
        self.student_layer = student_layer
        self.teacher_layer = teacher_layer
        self.pair: tuple[int, int] | None = None

    def bind(self, student: ModelShape, teacher: ModelShape | None) -> None:
        if teacher is None:
            return
        student_index = self.student_layer % (student.num_layers + 1) if self.student_layer < 0 else self.student_layer
        teacher_index = self.teacher_layer % (teacher.num_layers + 1) if self.teacher_layer < 0 else self.teacher_layer
        (pair,) = resolve_layer_map([[student_index, teacher_index]], student.num_layers, teacher.num_layers)
        if 0 in pair:
            raise ValueError(f"layer pair {list(pair)} uses index 0 (embeddings), which has no attention")
        bad = [
            f"{shape.name} width {shape.hidden_size}"
            for shape in (student, teacher)
            if shape.hidden_size % self.relation_heads
        ]
        if bad:
            raise ValueError(
                f"relation_heads={self.relation_heads} must divide both widths; it does not divide "
                f"{', '.join(bad)}"
            )
        self.pair = pair

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        s, t = (_attention_layer(index) for index in self.pair)
        student, teacher = inputs.student.captured, inputs.teacher.captured
        heads = self.relation_heads
        attention = relation_kl(
            scaled_scores(student["query"][s], student["key"][s], heads),
            scaled_scores(teacher["query"][t], teacher["key"][t], heads),
            inputs.attention_mask,
        )
        value = relation_kl(
            scaled_scores(student["value"][s], student["value"][s], heads),
            scaled_scores(teacher["value"][t], teacher["value"][t], heads),
            inputs.attention_mask,
        )
        return attention + value

    def extra_repr(self) -> str:
        return f"relation_heads={self.relation_heads}, pair={self.pair}"

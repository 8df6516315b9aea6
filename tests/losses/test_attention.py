"""Tests for distill/losses/attention.py: references, padding, different widths, bind errors."""

import math

import pytest
import torch

from distill.losses import (
    AttentionScoreMSE,
    LossInputs,
    MiniLMRelations,
    ModelOutputs,
    ModelShape,
    attention_score_mse,
    relation_kl,
    scaled_scores,
)

MASK = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])


def test_scaled_scores_per_head_reference():
    query, key = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    scores = scaled_scores(query, key, heads=2)
    assert scores.shape == (2, 2, 5, 5)
    expected = query[1, :, 4:8] @ key[1, :, 4:8].T / math.sqrt(4)
    assert torch.allclose(scores[1, 1], expected, atol=1e-6)


def test_attention_score_mse_reference_over_real_query_key_pairs():
    student, teacher = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    terms = [
        (student[b, h, i, j] - teacher[b, h, i, j]) ** 2
        for b in range(2) for h in range(3) for i in range(5) for j in range(5)
        if MASK[b, i] and MASK[b, j]
    ]
    assert attention_score_mse(student, teacher, MASK).item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)
    changed = student.clone()
    changed[0, :, 3:, :] = 1e3  # padded queries
    changed[0, :, :, 3:] = -1e3  # padded keys
    assert torch.equal(attention_score_mse(changed, teacher, MASK), attention_score_mse(student, teacher, MASK))


def reference_relation_kl(student_scores, teacher_scores, mask):
    values = []
    for b in range(student_scores.size(0)):
        real = mask[b].bool()
        for r in range(student_scores.size(1)):
            for i in range(student_scores.size(2)):
                if not real[i]:
                    continue
                p_t = torch.softmax(teacher_scores[b, r, i][real].double(), -1)
                p_s = torch.softmax(student_scores[b, r, i][real].double(), -1)
                values.append((p_t * (p_t.log() - p_s.log())).sum())
    return torch.stack(values).mean()


def test_relation_kl_reference_zero_for_identical_and_padding_free():
    student, teacher = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    expected = reference_relation_kl(student, teacher, MASK)
    assert relation_kl(student, teacher, MASK).item() == pytest.approx(expected.item(), rel=1e-5)
    assert relation_kl(teacher, teacher.clone(), MASK).abs().item() < 1e-6
    changed = student.clone()
    changed[0, :, :, 3:] = 50.0
    changed[0, :, 3:, :] = -50.0
    assert torch.allclose(relation_kl(changed, teacher, MASK), relation_kl(student, teacher, MASK))
    assert torch.isfinite(relation_kl(changed, teacher, MASK))


def shape(name, layers, width, heads):
    return ModelShape(name, layers, width, heads)


def captured_inputs(student_width=8, teacher_width=12, student_layers=1, teacher_layers=2, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def states(width, layers, grad):
        return {name: [torch.randn(2, 5, width, generator=generator, requires_grad=grad) for _ in range(layers)]
                for name in ("query", "key", "value")}

    return LossInputs(
        student=ModelOutputs(logits=torch.zeros(2, 2), captured=states(student_width, student_layers, True)),
        teacher=ModelOutputs(logits=torch.zeros(2, 2), captured=states(teacher_width, teacher_layers, False)),
        labels=None,
        attention_mask=MASK,
    )


def test_minilm_relations_across_widths_and_head_counts():
    term = MiniLMRelations(relation_heads=4)
    term.bind(shape("student s", 1, 8, 2), shape("teacher t", 2, 12, 3))
    assert term.pair == (1, 2)  # last layers
    inputs = captured_inputs()
    student, teacher = inputs.student.captured, inputs.teacher.captured
    expected = relation_kl(scaled_scores(student["query"][0], student["key"][0], 4), scaled_scores(teacher["query"][1], teacher["key"][1], 4), MASK) + relation_kl(
        scaled_scores(student["value"][0], student["value"][0], 4), scaled_scores(teacher["value"][1], teacher["value"][1], 4), MASK
    )
    value = term(inputs)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    value.backward()
    assert student["query"][0].grad is not None and student["value"][0].grad is not None


def test_bind_errors_name_models_and_sizes():
    with pytest.raises(ValueError, match="relation_heads=5 must divide both widths; it does not divide student s width 8, teacher t width 12"):
        MiniLMRelations(relation_heads=5).bind(shape("student s", 1, 8, 2), shape("teacher t", 2, 12, 3))
    with pytest.raises(ValueError, match="student s has 2 heads and teacher t 3"):
        AttentionScoreMSE().bind(shape("student s", 1, 8, 2), shape("teacher t", 2, 12, 3))
    with pytest.raises(ValueError, match="index 0"):
        AttentionScoreMSE(layer_map=[[0, 0]]).bind(shape("student s", 1, 8, 2), shape("teacher t", 2, 12, 2))


def test_attention_score_mse_term_drops_embedding_pairs():
    term = AttentionScoreMSE(layer_map="uniform")
    term.bind(shape("student s", 1, 8, 2), shape("teacher t", 2, 8, 2))
    assert term.pairs == [(1, 2)]
    inputs = captured_inputs(teacher_width=8)
    student, teacher = inputs.student.captured, inputs.teacher.captured
    expected = attention_score_mse(
        scaled_scores(student["query"][0], student["key"][0], 2), scaled_scores(teacher["query"][1], teacher["key"][1], 2), MASK
    )
    assert term(inputs).item() == pytest.approx(expected.item(), rel=1e-6)

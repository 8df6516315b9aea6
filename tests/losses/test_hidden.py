"""Tests for distill/losses/hidden.py."""

import pytest
import torch
import torch.nn.functional as F

from distill.losses import cosine_hidden


def test_matches_reference_over_non_padding_tokens():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(2, 5, 8, generator=generator)
    teacher = torch.randn(2, 5, 8, generator=generator)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    cosines = [
        F.cosine_similarity(student[b, t], teacher[b, t], dim=0)
        for b in range(2)
        for t in range(5)
        if mask[b, t]
    ]
    expected = torch.stack([1 - c for c in cosines]).mean()
    assert cosine_hidden(student, teacher, mask).item() == pytest.approx(expected.item(), rel=1e-5)


def test_padding_never_contributes():
    student = torch.randn(1, 4, 6)
    teacher = torch.randn(1, 4, 6)
    mask = torch.tensor([[1, 1, 0, 0]])
    changed = student.clone()
    changed[0, 2:] = torch.randn(2, 6) * 100
    assert torch.equal(cosine_hidden(student, teacher, mask), cosine_hidden(changed, teacher, mask))


def test_zero_for_identical_and_scaled_states():
    hidden = torch.randn(2, 3, 4)
    assert cosine_hidden(hidden, 3.0 * hidden, torch.ones(2, 3)).abs().item() < 1e-6


def test_width_mismatch_names_both_widths():
    with pytest.raises(ValueError, match="384 vs 768"):
        cosine_hidden(torch.randn(1, 2, 384), torch.randn(1, 2, 768), torch.ones(1, 2))


# --- TinyBERT hidden MSE, PKD, projections -------------------------------------------------------

from distill.losses import HiddenStateMSE, LossInputs, ModelOutputs, ModelShape, PatientKD, hidden_mse, pkd_cls_mse  # noqa: E402


def test_hidden_mse_matches_reference_and_ignores_padding():
    generator = torch.Generator().manual_seed(3)
    student = torch.randn(2, 5, 4, generator=generator)
    teacher = torch.randn(2, 5, 4, generator=generator)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    expected = torch.stack([((student[b, t] - teacher[b, t]) ** 2).mean() for b in range(2) for t in range(5) if mask[b, t]]).mean()
    assert hidden_mse(student, teacher, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    changed = student.clone()
    changed[mask == 0] = 1e3
    assert torch.equal(hidden_mse(changed, teacher, mask), hidden_mse(student, teacher, mask))


def test_pkd_is_zero_for_parallel_vectors_and_matches_reference():
    cls = torch.randn(3, 8)
    assert pkd_cls_mse(2.5 * cls, cls).abs().item() < 1e-6
    other = torch.randn(3, 8)
    expected = ((cls / cls.norm(dim=-1, keepdim=True) - other / other.norm(dim=-1, keepdim=True)) ** 2).sum(-1).mean()
    assert pkd_cls_mse(cls, other).item() == pytest.approx(expected.item(), rel=1e-5)


def layer_inputs(student_width=4, teacher_width=6, student_layers=2, teacher_layers=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    student = tuple(torch.randn(2, 5, student_width, generator=generator, requires_grad=True) for _ in range(student_layers + 1))
    teacher = tuple(torch.randn(2, 5, teacher_width, generator=generator) for _ in range(teacher_layers + 1))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    return LossInputs(
        student=ModelOutputs(logits=torch.zeros(2, 2), hidden_states=student),
        teacher=ModelOutputs(logits=torch.zeros(2, 2), hidden_states=teacher),
        labels=None,
        attention_mask=mask,
    )


def shapes(student_width=4, teacher_width=6, student_layers=2, teacher_layers=4):
    return ModelShape("student s", student_layers, student_width, 2), ModelShape("teacher t", teacher_layers, teacher_width, 2)


def test_hidden_state_mse_uses_the_uniform_map_and_per_pair_projections():
    term = HiddenStateMSE(layer_map="uniform", projection="per_pair")
    term.bind(*shapes())
    assert term.pairs == [(0, 0), (1, 2), (2, 4)]
    assert len(term.projections) == 3 and term.projections[0].weight.shape == (6, 4)
    inputs = layer_inputs()
    expected = sum(
        hidden_mse(term.projections[i](inputs.student.hidden_states[s]), inputs.teacher.hidden_states[t], inputs.attention_mask)
        for i, (s, t) in enumerate(term.pairs)
    ) / 3
    assert term(inputs).item() == pytest.approx(expected.item(), rel=1e-6)


def test_gradients_flow_through_projections_as_in_a_hand_written_reference():
    term = HiddenStateMSE(layer_map=[[2, 4]], projection="shared")
    term.bind(*shapes())
    inputs = layer_inputs()
    term(inputs).backward()
    (projection,) = term.projections
    weight = projection.weight.detach().clone().requires_grad_(True)
    bias = projection.bias.detach().clone().requires_grad_(True)
    student, teacher, mask = inputs.student.hidden_states[2].detach(), inputs.teacher.hidden_states[4], inputs.attention_mask.bool()
    reference = ((student @ weight.T + bias - teacher) ** 2).mean(-1)[mask].mean()
    reference.backward()
    assert torch.allclose(projection.weight.grad, weight.grad, atol=1e-6)
    assert torch.allclose(projection.bias.grad, bias.grad, atol=1e-6)
    assert inputs.student.hidden_states[2].grad is not None


def test_equal_widths_need_no_projection_and_mismatch_without_one_is_refused():
    same = HiddenStateMSE(projection=None)
    same.bind(*shapes(student_width=6))
    assert len(same.projections) == 0
    with pytest.raises(ValueError, match=r"student s: 2 layers, width 4; teacher t: 4 layers, width 6"):
        HiddenStateMSE(projection=None).bind(*shapes())


def test_bad_layer_map_names_both_models():
    with pytest.raises(ValueError, match=r"student layer 3 is out of range.*student s: 2 layers"):
        HiddenStateMSE(layer_map=[[3, 1]]).bind(*shapes())


def test_pkd_skip_term_on_cls_states():
    term = PatientKD(projection="per_pair")
    term.bind(*shapes(student_layers=2, teacher_layers=4))
    assert term.pairs == [(1, 2)]
    inputs = layer_inputs()
    expected = pkd_cls_mse(term.projections[0](inputs.student.hidden_states[1][:, 0]), inputs.teacher.hidden_states[2][:, 0])
    assert term(inputs).item() == pytest.approx(expected.item(), rel=1e-6)

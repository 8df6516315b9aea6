"""Tests for distill/losses/logits.py: reference values, masks, T² gradient scale."""

import math

import pytest
import torch
import torch.nn.functional as F

from distill.losses import hard_label_cross_entropy, regression_mse, soft_target_kl


def reference_kl(student_logits, teacher_logits, temperature):
    """KL(p_t || p_s) per row, written out with probabilities (no log-space tricks)."""
    teacher_probs = torch.softmax(teacher_logits.double() / temperature, -1)
    student_probs = torch.softmax(student_logits.double() / temperature, -1)
    return (teacher_probs * (teacher_probs.log() - student_probs.log())).sum(-1)


def test_hand_computed_two_class_case():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # p_t = (0.75, 0.25), p_s = (0.5, 0.5) at T=1
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert soft_target_kl(student, teacher, 1.0).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 8.0])
def test_matches_reference_with_t_squared(temperature):
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(6, 5, generator=generator) * 3
    teacher = torch.randn(6, 5, generator=generator) * 3
    expected = reference_kl(student, teacher, temperature).mean() * temperature**2
    assert soft_target_kl(student, teacher, temperature).item() == pytest.approx(expected.item(), rel=1e-5)


def test_token_level_mask_averages_over_valid_positions_only():
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(2, 4, 7, generator=generator)
    teacher = torch.randn(2, 4, 7, generator=generator)
    mask = torch.tensor([[True, True, False, False], [True, False, True, False]])
    expected = reference_kl(student, teacher, 2.0)[mask].mean() * 4.0
    assert soft_target_kl(student, teacher, 2.0, mask).item() == pytest.approx(expected.item(), rel=1e-5)
    # Whatever sits at masked positions changes nothing.
    scrambled = student.clone()
    scrambled[~mask] = 1e4 * torch.randn(int((~mask).sum()), 7, generator=generator)
    assert torch.equal(soft_target_kl(scrambled, teacher, 2.0, mask), soft_target_kl(student, teacher, 2.0, mask))


def test_empty_mask_gives_zero_not_nan():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    value = soft_target_kl(logits, torch.randn(2, 3, 5), 2.0, torch.zeros(2, 3, dtype=torch.bool))
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(logits.grad).all()


def test_zero_when_student_equals_teacher_and_nonnegative_otherwise():
    logits = torch.randn(4, 9)
    assert soft_target_kl(logits, logits.clone(), 3.0).abs().item() < 1e-6
    assert soft_target_kl(torch.randn(4, 9), logits, 3.0).item() > 0


def _student_gradient_norm(temperature, scale_by_t_squared):
    generator = torch.Generator().manual_seed(2)
    student = torch.randn(64, 10, generator=generator).requires_grad_(True)
    teacher = torch.randn(64, 10, generator=generator)
    loss = soft_target_kl(student, teacher, temperature)
    if not scale_by_t_squared:
        loss = loss / temperature**2
    loss.backward()
    return student.grad.norm().item()


def test_t_squared_keeps_gradient_scale_roughly_constant():
    temperatures = [2.0, 4.0, 8.0, 16.0]
    with_t2 = [_student_gradient_norm(t, True) for t in temperatures]
    without_t2 = [_student_gradient_norm(t, False) for t in temperatures]
    assert max(with_t2) / min(with_t2) < 1.3
    # Without the T² factor the gradient falls as 1/T²: 64x from T=2 to T=16.
    for t, norm in zip(temperatures, without_t2):
        expected_ratio = (temperatures[0] / t) ** 2
        assert norm / without_t2[0] == pytest.approx(expected_ratio, rel=0.3)


def test_no_gradient_reaches_teacher_logits():
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4, requires_grad=True)
    soft_target_kl(student, teacher, 2.0).backward()
    assert teacher.grad is None and student.grad is not None


def test_low_precision_inputs_are_computed_in_float32():
    generator = torch.Generator().manual_seed(3)
    student = torch.randn(8, 50, generator=generator)
    teacher = torch.randn(8, 50, generator=generator)
    value = soft_target_kl(student.bfloat16(), teacher.bfloat16(), 2.0)
    assert value.dtype == torch.float32
    expected = soft_target_kl(student.bfloat16().float(), teacher.bfloat16().float(), 2.0)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_non_positive_temperature_is_an_error(temperature):
    with pytest.raises(ValueError, match="temperature"):
        soft_target_kl(torch.randn(2, 3), torch.randn(2, 3), temperature)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ"):
        soft_target_kl(torch.randn(2, 3), torch.randn(2, 4), 1.0)


def test_hard_label_cross_entropy_matches_torch_and_ignores_index():
    logits = torch.randn(5, 3)
    labels = torch.tensor([0, 2, -100, 1, -100])
    expected = F.cross_entropy(logits, labels, ignore_index=-100)
    assert hard_label_cross_entropy(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    all_ignored = hard_label_cross_entropy(logits, torch.full((5,), -100))
    assert all_ignored.item() == 0.0


def test_regression_mse_flattens_single_output_head():
    predictions = torch.tensor([[1.0], [2.0], [4.0]])
    targets = torch.tensor([1.0, 3.0, 1.0])
    assert regression_mse(predictions, targets).item() == pytest.approx((0 + 1 + 9) / 3)


def test_logit_mse_and_soft_cross_entropy_references():
    from distill.losses import logit_mse, soft_cross_entropy

    generator = torch.Generator().manual_seed(4)
    student = torch.randn(5, 3, generator=generator, requires_grad=True)
    teacher = torch.randn(5, 3, generator=generator)
    assert logit_mse(student, teacher).item() == pytest.approx(((student - teacher) ** 2).mean().item(), rel=1e-6)
    temperature = 2.0
    teacher_probs = torch.softmax(teacher / temperature, -1)
    expected = -(teacher_probs * torch.log_softmax(student / temperature, -1)).sum(-1).mean()
    assert soft_cross_entropy(student, teacher, temperature).item() == pytest.approx(expected.item(), rel=1e-6)
    # Soft CE = KL / T² + teacher entropy: the same gradient as the KL without its T².
    soft_cross_entropy(student, teacher, temperature).backward()
    soft_ce_grad = student.grad.clone()
    student.grad = None
    (soft_target_kl(student, teacher, temperature) / temperature**2).backward()
    assert torch.allclose(soft_ce_grad, student.grad, atol=1e-6)

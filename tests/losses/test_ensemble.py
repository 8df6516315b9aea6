"""Tests for distill/losses/ensemble.py: the combined teacher of several teachers."""

import pytest
import torch

from distill.losses import ensemble_logits, ensemble_predictions, normalised_weights, soft_target_kl


def teachers(count=3, seed=0, shape=(5, 4)):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator) * 3 for _ in range(count)]


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_softened_combined_logits_are_exactly_the_weighted_mixture(temperature):
    logits = teachers()
    weights = [1.0, 2.0, 5.0]  # normalised: 1/8, 2/8, 5/8
    mixture = sum(w / 8 * torch.softmax(z / temperature, -1) for w, z in zip(weights, logits))
    combined = ensemble_logits(logits, weights, temperature)
    assert torch.allclose(torch.softmax(combined / temperature, -1), mixture, atol=1e-6)
    # Not the softmax of averaged logits (a different distribution).
    averaged = sum(w / 8 * z for w, z in zip(weights, logits))
    assert not torch.allclose(torch.softmax(averaged / temperature, -1), mixture, atol=1e-3)


def test_weights_are_normalised_and_one_teacher_is_itself():
    logits = teachers(2)
    assert torch.allclose(ensemble_logits(logits, [1, 3], 2.0), ensemble_logits(logits, [0.25, 0.75], 2.0), atol=1e-6)
    alone = ensemble_logits(logits[:1], [7.0], 2.0)
    assert torch.allclose(torch.softmax(alone / 2, -1), torch.softmax(logits[0] / 2, -1), atol=1e-6)
    assert normalised_weights({"a": 1, "b": 3}) == {"a": 0.25, "b": 0.75}


@pytest.mark.parametrize("weights", [[1.0, 0.0], [1.0, -2.0], [1.0, float("inf")]])
def test_zero_negative_or_infinite_weights_are_refused(weights):
    with pytest.raises(ValueError, match="> 0"):
        ensemble_logits(teachers(2), weights, 1.0)


def test_kd_gradient_is_the_weighted_combination_of_the_per_teacher_gradients():
    logits = teachers(3, seed=1)
    weights = [0.2, 0.3, 0.5]
    temperature = 2.0
    student = torch.randn(5, 4, requires_grad=True)
    soft_target_kl(student, ensemble_logits(logits, weights, temperature), temperature).backward()
    combined_grad = student.grad.clone()
    by_hand = torch.zeros_like(student)
    for weight, teacher in zip(weights, logits):
        student.grad = None
        soft_target_kl(student, teacher, temperature).backward()
        by_hand += weight * student.grad
    assert torch.allclose(combined_grad, by_hand, atol=1e-6)
    # And the closed form: T² · (p_s − p_mix) / T, averaged over the rows.
    mixture = sum(w * torch.softmax(z / temperature, -1) for w, z in zip(weights, logits))
    closed = temperature * (torch.softmax(student.detach() / temperature, -1) - mixture) / student.size(0)
    assert torch.allclose(combined_grad, closed, atol=1e-6)


def test_regression_predictions_are_the_weighted_mean():
    predictions = [torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0], [6.0]])]
    assert torch.allclose(ensemble_predictions(predictions, [1, 3]), torch.tensor([[2.5], [5.0]]))


def test_mismatched_teacher_shapes_are_named():
    with pytest.raises(ValueError, match=r"differ in shape: \[\(2, 3\), \(2, 4\)\]"):
        ensemble_logits([torch.randn(2, 3), torch.randn(2, 4)], [1, 1], 1.0)

"""Top-k soft-target KL with the tail mass: a hand computation, the full KL at k = V, a lower bound below."""

from __future__ import annotations

import math

import torch

from distill.losses.logits import soft_target_kl
from distill.losses.topk import top_k_soft_target_kl, top_k_with_tail


def test_top_k_kl_with_tail_equals_a_hand_computation():
    teacher = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    student = torch.tensor([[0.5, 1.5, -0.5, 0.0]])
    T, k = 2.0, 2
    values, indices, tail = top_k_with_tail(teacher, k, T)
    assert indices.tolist() == [[0, 1]] and values.tolist() == [[2.0, 1.0]]
    assert math.isclose(tail.item(), math.log(math.exp(0.0) + math.exp(-0.5)), rel_tol=1e-6)

    p = [math.exp(z / T) for z in [2.0, 1.0, 0.0, -1.0]]
    q = [math.exp(z / T) for z in [0.5, 1.5, -0.5, 0.0]]
    p = [v / sum(p) for v in p]
    q = [v / sum(q) for v in q]
    p_coarse, q_coarse = [p[0], p[1], p[2] + p[3]], [q[0], q[1], q[2] + q[3]]
    expected = T**2 * sum(a * math.log(a / b) for a, b in zip(p_coarse, q_coarse))
    got = top_k_soft_target_kl(student, values, indices, tail, T)
    assert math.isclose(got.item(), expected, rel_tol=1e-5)


def test_top_k_kl_is_the_full_kl_when_k_is_the_vocabulary_and_below_it_otherwise():
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(6, 5, 50, generator=generator) * 3
    student = torch.randn(6, 5, 50, generator=generator) * 3
    mask = torch.rand(6, 5, generator=generator) > 0.3
    for T in (1.0, 2.0, 4.0):
        full = soft_target_kl(student, teacher, T, mask)
        values, indices, tail = top_k_with_tail(teacher, 50, T)
        assert torch.isinf(tail).all()
        torch.testing.assert_close(top_k_soft_target_kl(student, values, indices, tail, T, mask), full, rtol=1e-5, atol=1e-6)
        previous = torch.tensor(0.0)
        for k in (1, 5, 20, 49):  # coarser buckets lose information: never above the full KL, rising with k
            values, indices, tail = top_k_with_tail(teacher, k, T)
            coarse = top_k_soft_target_kl(student, values, indices, tail, T, mask)
            assert coarse <= full + 1e-6 and coarse >= previous - 1e-6
            previous = coarse


def test_top_k_kl_gradient_reaches_every_student_logit_and_is_finite():
    teacher = torch.tensor([[4.0, 3.0, -2.0, -3.0, -4.0]])
    student = torch.zeros(1, 5, requires_grad=True)
    values, indices, tail = top_k_with_tail(teacher, 2, 1.0)
    top_k_soft_target_kl(student, values, indices, tail, 1.0).backward()
    assert torch.isfinite(student.grad).all()
    assert (student.grad[0, :2] < 0).all() and (student.grad[0, 2:] > 0).all()  # kept tokens up, tail down


# --- the chunked form the token losses use (token_forward_kl with a TopKLogits teacher) -----------

import pytest  # noqa: E402

from distill.losses.tokens import token_forward_kl, token_reverse_kl  # noqa: E402
from distill.losses.topk import TopKLogits  # noqa: E402


def _stored(teacher: torch.Tensor, k: int, T: float, dtype=torch.float32) -> TopKLogits:
    values, indices, tail = top_k_with_tail(teacher, k, T)
    return TopKLogits(values.to(dtype), indices, tail, T)


def _value_and_grad(function, student):
    student = student.detach().clone().requires_grad_(True)
    value = function(student)
    value.backward()
    return value.detach(), student.grad


@pytest.mark.parametrize("T", [1.0, 2.0])
@pytest.mark.parametrize("chunk_size", [1, 3, 7, None])
def test_chunked_top_k_kl_equals_the_reference_in_value_and_gradient(T, chunk_size):
    generator = torch.Generator().manual_seed(1)
    teacher, student = torch.randn(7, 40, generator=generator) * 3, torch.randn(7, 40, generator=generator) * 3
    values, indices, tail = top_k_with_tail(teacher, 6, T)
    expected, expected_grad = _value_and_grad(lambda s: top_k_soft_target_kl(s, values, indices, tail, T), student)
    got, grad = _value_and_grad(lambda s: token_forward_kl(s, TopKLogits(values, indices, tail, T), T, chunk_size), student)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-7)


def test_chunked_top_k_kl_at_k_equal_v_is_the_full_token_kl():
    generator = torch.Generator().manual_seed(2)
    teacher, student = torch.randn(9, 30, generator=generator) * 2, torch.randn(9, 30, generator=generator) * 2
    for T in (1.0, 4.0):
        expected, expected_grad = _value_and_grad(lambda s: token_forward_kl(s, teacher, T, 4), student)
        got, grad = _value_and_grad(lambda s: token_forward_kl(s, _stored(teacher, 30, T), T, 4), student)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-7)


def test_chunked_top_k_kl_passes_gradcheck_in_float64():
    generator = torch.Generator().manual_seed(3)
    teacher = torch.randn(4, 12, generator=generator, dtype=torch.float64)
    student = torch.randn(4, 12, generator=generator, dtype=torch.float64, requires_grad=True)
    stored = _stored(teacher, 3, 2.0, torch.float64)
    assert torch.autograd.gradcheck(lambda s: token_forward_kl(s, stored, 2.0, 3), (student,))


def test_a_tail_the_student_rules_out_gives_a_finite_gradient_that_raises_the_tail():
    teacher = torch.tensor([[2.0, 1.0, 1.0, 1.0]])
    student = torch.tensor([[200.0, 0.0, -150.0, -150.0]])  # q_tail underflows to 0 in float32
    value, grad = _value_and_grad(lambda s: token_forward_kl(s, _stored(teacher, 2, 1.0), 1.0), student)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert grad[0, 0] > 0 and (grad[0, 1:] <= 0).all()  # mass moves off the student's peak


def test_a_top_k_teacher_is_refused_by_reverse_kl_and_at_another_temperature():
    teacher, student = torch.randn(3, 10), torch.randn(3, 10)
    with pytest.raises(ValueError, match="forward KL .*loss=token_kd"):
        token_reverse_kl(student, _stored(teacher, 4, 1.0), 1.0)
    with pytest.raises(ValueError, match="stored at T=2.*T=1"):
        token_forward_kl(student, _stored(teacher, 4, 2.0), 1.0)
    with pytest.raises(ValueError, match=r"rows \(3,\) differ"):
        token_forward_kl(torch.randn(4, 10), _stored(teacher, 4, 1.0), 1.0)

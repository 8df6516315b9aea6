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

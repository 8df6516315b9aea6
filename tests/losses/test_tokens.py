"""Tests for distill/losses/tokens.py: references, chunking, gradients, low precision, LossMix."""

import math

import pytest
import torch

from distill.losses import (
    GeneralizedJSD,
    LossInputs,
    LossMix,
    ModelOutputs,
    TokenForwardKL,
    TokenReverseKL,
    generalized_jsd,
    soft_target_kl,
    token_forward_kl,
    token_reverse_kl,
)

TEMPERATURES = [0.5, 1.0, 2.0, 4.0]


def logits(rows=5, vocab=7, seed=0, scale=3.0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    student = (torch.randn(rows, vocab, generator=generator, dtype=torch.float64) * scale).to(dtype)
    teacher = (torch.randn(rows, vocab, generator=generator, dtype=torch.float64) * scale).to(dtype)
    return student, teacher


def reference(kind, student, teacher, temperature, beta=None):
    """The loss written out in float64, term by term, no chunks; the mixture formed from
    probabilities (not in log space)."""
    log_s = torch.log_softmax(student.double() / temperature, -1)
    log_t = torch.log_softmax(teacher.double() / temperature, -1)

    def kl(log_p, log_q):  # sum p (log p - log q), with 0 log 0 = 0
        p = log_p.exp()
        return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)

    if kind == "forward":
        per_row = kl(log_t, log_s)
    elif kind == "reverse":
        per_row = kl(log_s, log_t)
    else:
        log_m = (beta * log_t.exp() + (1 - beta) * log_s.exp()).log()
        per_row = beta * kl(log_t, log_m) + (1 - beta) * kl(log_s, log_m)
    return per_row.mean() * temperature**2


LOSSES = {
    "forward": lambda s, t, T, chunk=None: token_forward_kl(s, t, T, chunk),
    "reverse": lambda s, t, T, chunk=None: token_reverse_kl(s, t, T, chunk),
    "jsd": lambda s, t, T, chunk=None: generalized_jsd(s, t, T, 0.3, chunk),
}


def value_and_grad(loss, student, teacher, *args):
    student = student.detach().clone().requires_grad_(True)
    value = loss(student, teacher, *args)
    value.backward()
    return value.detach(), student.grad


# --- values against hand-written references ------------------------------------------------------


def test_hand_computed_two_token_case():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # p_t = (0.75, 0.25), p_s = (0.5, 0.5) at T=1
    forward = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    reverse = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert token_forward_kl(student, teacher, 1.0).item() == pytest.approx(forward, rel=1e-6)
    assert token_reverse_kl(student, teacher, 1.0).item() == pytest.approx(reverse, rel=1e-6)
    m = (0.625, 0.375)  # 0.5·p_t + 0.5·p_s
    jsd = 0.5 * (0.75 * math.log(0.75 / m[0]) + 0.25 * math.log(0.25 / m[1])) + 0.5 * (
        0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])
    )
    assert generalized_jsd(student, teacher, 1.0, 0.5).item() == pytest.approx(jsd, rel=1e-6)


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_forward_kl_matches_soft_target_kl_and_reference(temperature):
    student, teacher = logits()
    value = token_forward_kl(student, teacher, temperature)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(soft_target_kl(student, teacher, temperature).item(), rel=1e-6)
    assert value.item() == pytest.approx(reference("forward", student, teacher, temperature).item(), rel=1e-5)
    # The same gradient as soft_target_kl's autograd.
    _, grad = value_and_grad(token_forward_kl, student, teacher, temperature)
    _, expected = value_and_grad(soft_target_kl, student, teacher, temperature)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_reverse_kl_matches_reference(temperature):
    student, teacher = logits(seed=1)
    expected = reference("reverse", student, teacher, temperature)
    assert token_reverse_kl(student, teacher, temperature).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("beta", [0.3, 0.5, 0.9])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_generalized_jsd_matches_explicit_mixture(beta, temperature):
    student, teacher = logits(seed=2)
    expected = reference("jsd", student, teacher, temperature, beta)
    assert generalized_jsd(student, teacher, temperature, beta).item() == pytest.approx(expected.item(), rel=1e-5)


def test_generalized_jsd_at_its_ends_is_forward_and_reverse_kl():
    student, teacher = logits(seed=3)
    for beta, loss in ((0.0, token_forward_kl), (1.0, token_reverse_kl)):
        value, grad = value_and_grad(generalized_jsd, student, teacher, 2.0, beta)
        expected_value, expected_grad = value_and_grad(loss, student, teacher, 2.0)
        assert torch.equal(value, expected_value)
        assert torch.equal(grad, expected_grad)
    # In between, the formula tends to 0 at the ends (the ends are set by definition, as in GKD/TRL).
    near_zero = generalized_jsd(student, teacher, 2.0, 1e-4).item()
    assert near_zero == pytest.approx(1e-4 * token_forward_kl(student, teacher, 2.0).item(), rel=1e-2)


def test_zero_when_student_equals_teacher_and_positive_otherwise():
    student, teacher = logits(seed=4)
    for loss in LOSSES.values():
        assert abs(loss(student, student.clone(), 2.0).item()) < 1e-6
        assert loss(student, teacher, 2.0).item() > 0


# --- chunking -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(LOSSES))
def test_chunked_equals_unchunked_in_value_and_gradient(kind):
    student, teacher = logits(rows=11, vocab=13, seed=5)
    value, grad = value_and_grad(LOSSES[kind], student, teacher, 2.0)
    for chunk in (1, 3, 11, 16):
        chunk_value, chunk_grad = value_and_grad(LOSSES[kind], student, teacher, 2.0, chunk)
        torch.testing.assert_close(chunk_value, value, rtol=1e-6, atol=0)
        torch.testing.assert_close(chunk_grad, grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind", list(LOSSES))
def test_gradient_matches_autograd_of_the_float64_reference(kind):
    student, teacher = logits(rows=7, vocab=9, seed=6, dtype=torch.float64)
    for chunk in (None, 2):
        _, grad = value_and_grad(LOSSES[kind], student, teacher, 1.5, chunk)
        _, expected = value_and_grad(
            lambda s, t, T: reference(kind, s, t, T, 0.3), student, teacher, 1.5
        )
        torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", list(LOSSES))
def test_gradcheck_float64_including_a_retained_graph(kind):
    # gradcheck runs backward more than once over one graph: the second one recomputes the gradient.
    student, teacher = logits(rows=4, vocab=6, seed=7, dtype=torch.float64)
    student.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: LOSSES[kind](s, teacher, 0.7, 3), (student,))


def test_loss_weight_scales_the_gradient_and_teacher_gets_none():
    student, teacher = logits(seed=8)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    (0.25 * token_reverse_kl(student, teacher, 2.0, 2)).backward()
    assert teacher.grad is None
    _, grad = value_and_grad(token_reverse_kl, student, teacher.detach(), 2.0)
    torch.testing.assert_close(student.grad, 0.25 * grad)


def test_no_gradient_work_under_no_grad(monkeypatch):
    student, teacher = logits(seed=9)
    from distill.losses import chunked

    computed = []
    chunk_terms = chunked._chunk_terms
    monkeypatch.setattr(chunked, "_chunk_terms", lambda *args: computed.append(args[-1]) or chunk_terms(*args))
    with torch.no_grad():
        value = generalized_jsd(student.requires_grad_(True), teacher, 2.0, 0.5, 2)
    assert not value.requires_grad and computed == [False] * 3  # 5 rows in chunks of 2, no gradient
    assert value.item() == pytest.approx(reference("jsd", student, teacher, 2.0, 0.5).item(), rel=1e-5)


# --- precision and extreme logits -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["reverse", "jsd", "forward"])
def test_bfloat16_large_logits_stay_finite_and_match_float32(kind):
    generator = torch.Generator().manual_seed(10)
    student = torch.randn(16, 64, generator=generator) * 30
    teacher = torch.randn(16, 64, generator=generator) * 30
    # Extreme but finite logits (z/T must stay inside float32: |z| up to ~1e38·T).
    student[0, :3] = torch.tensor([1e4, -1e4, 3e4])
    teacher[1, :3] = torch.tensor([-1e4, 1e4, -3e4])
    student[2], teacher[2] = teacher[1], student[0]
    student, teacher = student.bfloat16(), teacher.bfloat16()
    assert torch.isfinite(student).all() and torch.isfinite(teacher).all()
    value, grad = value_and_grad(LOSSES[kind], student, teacher, 0.5, 5)
    assert value.dtype == torch.float32 and grad.dtype == torch.bfloat16
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    value32, grad32 = value_and_grad(LOSSES[kind], student.float(), teacher.float(), 0.5, 5)
    torch.testing.assert_close(value, value32, rtol=1e-6, atol=0)
    assert value.item() == pytest.approx(reference(kind, student, teacher, 0.5, 0.3).item(), rel=1e-4)
    torch.testing.assert_close(grad.float(), grad32, rtol=1e-2, atol=1e-2 * grad32.abs().max().item())


def test_mixed_dtypes_and_minus_infinity_teacher_logits():
    student, teacher = logits(seed=11)
    teacher[:, 0] = -math.inf  # a teacher that rules a token out: 0·log 0 = 0, not NaN
    for kind in ("forward", "jsd"):
        value, grad = value_and_grad(LOSSES[kind], student, teacher.half(), 2.0, 2)
        expected = reference(kind, student, teacher.half().float(), 2.0, 0.3)
        assert value.item() == pytest.approx(expected.item(), rel=1e-5)
        assert torch.isfinite(grad).all()


def _gradient_norm(temperature, scale_by_t_squared):
    student, teacher = logits(rows=64, vocab=10, seed=12, scale=1.0)
    student.requires_grad_(True)
    loss = token_forward_kl(student, teacher, temperature, 16)
    if not scale_by_t_squared:
        loss = loss / temperature**2
    loss.backward()
    return student.grad.norm().item()


def test_t_squared_keeps_gradient_scale_roughly_constant():
    temperatures = [2.0, 4.0, 8.0, 16.0]
    with_t2 = [_gradient_norm(t, True) for t in temperatures]
    without_t2 = [_gradient_norm(t, False) for t in temperatures]
    assert max(with_t2) / min(with_t2) < 1.3
    for t, norm in zip(temperatures, without_t2):
        assert norm / without_t2[0] == pytest.approx((temperatures[0] / t) ** 2, rel=0.3)


# --- edge cases and errors ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(LOSSES))
@pytest.mark.parametrize("chunk", [None, 4])
def test_no_rows_give_zero_with_a_zero_gradient(kind, chunk):
    student = torch.zeros(0, 7, requires_grad=True)
    value = LOSSES[kind](student, torch.zeros(0, 7), 2.0, chunk)
    assert value.item() == 0.0
    value.backward()
    assert student.grad is not None and student.grad.shape == (0, 7)


@pytest.mark.parametrize("beta", [-0.1, 1.5, float("nan")])
def test_beta_outside_unit_interval_is_an_error(beta):
    student, teacher = logits()
    with pytest.raises(ValueError, match=r"loss\.beta must be in \[0, 1\]"):
        generalized_jsd(student, teacher, 1.0, beta)
    with pytest.raises(ValueError, match=r"loss\.beta"):
        GeneralizedJSD(beta=beta)


@pytest.mark.parametrize("kind", list(LOSSES))
def test_bad_temperature_shape_and_chunk_size_are_errors(kind):
    student, teacher = logits()
    with pytest.raises(ValueError, match=r"loss\.temperature"):
        LOSSES[kind](student, teacher, 0.0)
    with pytest.raises(ValueError, match=r"\(5, 7\).*\(5, 8\)"):
        LOSSES[kind](student, torch.randn(5, 8), 1.0)
    with pytest.raises(ValueError, match=r"loss\.chunk_size"):
        LOSSES[kind](student, teacher, 1.0, 0)
    with pytest.raises(ValueError, match=r"loss\.chunk_size"):
        TokenForwardKL(chunk_size=2.5)


# --- module forms in a LossMix --------------------------------------------------------------------


def test_terms_in_a_loss_mix_match_the_functions():
    student, teacher = logits(rows=6, vocab=11, seed=13)
    inputs = LossInputs(
        student=ModelOutputs(logits=student),
        teacher=ModelOutputs(logits=teacher),
        labels=None,
        attention_mask=torch.ones(2, 3, dtype=torch.long),
    )
    mix = LossMix(
        {
            "fkl": {"weight": 0.5, "loss": TokenForwardKL(chunk_size=4)},
            "rkl": {"weight": 0.25, "loss": TokenReverseKL(chunk_size=2)},
            "jsd": {"weight": 1.0, "loss": GeneralizedJSD(beta=0.9, chunk_size=None)},
        },
        temperature=2.0,
    )
    result = mix(inputs)
    expected = {
        "fkl": token_forward_kl(student, teacher, 2.0),
        "rkl": token_reverse_kl(student, teacher, 2.0),
        "jsd": generalized_jsd(student, teacher, 2.0, 0.9),
    }
    for name, value in expected.items():
        assert result.unweighted[name].item() == pytest.approx(value.item(), rel=1e-6)
    total = 0.5 * expected["fkl"] + 0.25 * expected["rkl"] + expected["jsd"]
    assert result.total.item() == pytest.approx(total.item(), rel=1e-6)
    assert all(term.temperature == 2.0 for term in mix.terms.values())
    text = repr(mix)
    assert "KL(softmax(z_s/T) || softmax(z_t/T))" in text and "β=0.9" in text and "chunk_size=4" in text
    # A logit mask selects rows once.
    mask = torch.tensor([True, False, True, True, False, True])
    masked = LossInputs(**{**inputs.__dict__, "logit_mask": mask})
    value = TokenReverseKL(temperature=2.0, chunk_size=3)(masked)
    assert value.item() == pytest.approx(token_reverse_kl(student[mask], teacher[mask], 2.0).item(), rel=1e-6)

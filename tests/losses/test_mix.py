"""Tests for distill/losses/mix.py (LossMix)."""

import pytest
import torch

from distill.losses import (
    CosineHidden,
    HardLabelCE,
    LossInputs,
    LossMix,
    ModelOutputs,
    SoftTargetKL,
    cosine_hidden,
    hard_label_cross_entropy,
    soft_target_kl,
)


def make_inputs(labels=True, teacher=True):
    generator = torch.Generator().manual_seed(0)
    hidden = lambda: (torch.randn(3, 4, 8, generator=generator),)  # noqa: E731
    student = ModelOutputs(logits=torch.randn(3, 2, generator=generator), hidden_states=hidden())
    teacher_out = ModelOutputs(logits=torch.randn(3, 2, generator=generator), hidden_states=hidden())
    return LossInputs(
        student=student,
        teacher=teacher_out if teacher else None,
        labels=torch.tensor([0, 1, 1]) if labels else None,
        attention_mask=torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]),
    )


def full_mix(**weights):
    weights = {"kd": 0.5, "ce": 0.5, "cos": 1.0, **weights}
    return LossMix(
        {
            "kd": {"weight": weights["kd"], "loss": SoftTargetKL()},
            "ce": {"weight": weights["ce"], "loss": HardLabelCE()},
            "cos": {"weight": weights["cos"], "loss": CosineHidden()},
        },
        temperature=2.0,
    )


def test_total_is_the_weighted_sum_of_the_terms():
    inputs = make_inputs()
    result = full_mix()(inputs)
    kd = soft_target_kl(inputs.student.logits, inputs.teacher.logits, 2.0)
    ce = hard_label_cross_entropy(inputs.student.logits, inputs.labels)
    cos = cosine_hidden(inputs.student.hidden_states[-1], inputs.teacher.hidden_states[-1], inputs.attention_mask)
    assert result.unweighted["kd"].item() == pytest.approx(kd.item())
    assert result.weighted["ce"].item() == pytest.approx(0.5 * ce.item())
    assert result.total.item() == pytest.approx((0.5 * kd + 0.5 * ce + cos).item(), rel=1e-6)
    assert result.counts == {"kd": 3, "ce": 3, "cos": 3}


def test_zero_weight_and_null_terms_are_off():
    mix = LossMix({"kd": {"weight": 1.0, "loss": SoftTargetKL()}, "ce": {"weight": 0, "loss": HardLabelCE()}, "cos": None})
    assert list(mix.terms) == ["kd"]
    assert "ce" not in mix(make_inputs()).unweighted


def test_label_terms_are_skipped_on_unlabeled_batches():
    result = full_mix()(make_inputs(labels=False))
    assert "ce" not in result.unweighted and result.counts["ce"] == 0
    assert result.counts["kd"] == 3


def test_temperature_is_pushed_into_every_kd_term():
    mix = full_mix()
    mix.temperature = 4.0
    assert mix.terms["kd"].temperature == 4.0
    with pytest.raises(ValueError, match="temperature"):
        mix.temperature = 0.0


def test_repr_prints_the_whole_formula():
    text = repr(full_mix())
    assert "0.5·[kd: KL(softmax(z_t/T) || softmax(z_s/T))·T²]" in text
    assert "0.5·[ce: CE(z_s, y)]" in text and "1·[cos: 1 - cos(h_s, h_t)]" in text and "T=2" in text


def test_flags_and_errors():
    mix = full_mix()
    assert mix.uses_teacher and mix.uses_hidden_states
    assert not LossMix({"ce": {"weight": 1, "loss": HardLabelCE()}}).uses_teacher
    with pytest.raises(ValueError, match="non-zero weight"):
        LossMix({"ce": {"weight": 0, "loss": HardLabelCE()}})
    with pytest.raises(TypeError, match="loss.terms.ce.loss"):
        LossMix({"ce": {"weight": 1, "loss": torch.nn.Linear(1, 1)}})


def test_hidden_state_only_mix_works_without_logits():
    # task=feature_extraction: base models return no logits; the total starts from the attention mask.
    generator = torch.Generator().manual_seed(0)
    hidden = lambda: (torch.randn(3, 4, 8, generator=generator),)  # noqa: E731
    inputs = LossInputs(
        student=ModelOutputs(logits=None, hidden_states=hidden()),
        teacher=ModelOutputs(logits=None, hidden_states=hidden()),
        labels=None,
        attention_mask=torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]),
    )
    result = LossMix({"cos": {"weight": 2.0, "loss": CosineHidden()}})(inputs)
    expected = 2.0 * cosine_hidden(inputs.student.hidden_states[-1], inputs.teacher.hidden_states[-1], inputs.attention_mask)
    assert result.total.dtype == torch.float32 and result.total.item() == pytest.approx(expected.item())

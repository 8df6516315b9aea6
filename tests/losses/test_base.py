"""Tests for distill/losses/base.py: token-level row selection (LossInputs.for_tokens)."""

import pytest
import torch
import torch.nn.functional as F

from distill.losses import CosineHidden, HardLabelCE, LossInputs, LossMix, ModelOutputs, SoftTargetKL, cosine_hidden


def test_masked_positions_feed_kl_and_ce_the_right_rows():
    generator = torch.Generator().manual_seed(0)
    batch, length, vocab, temperature = 3, 7, 11, 2.0
    student_logits = torch.randn(batch, length, vocab, generator=generator)
    teacher_logits = torch.randn(batch, length, vocab, generator=generator)
    hidden = (torch.randn(batch, length, 8, generator=generator),)
    teacher_hidden = (torch.randn(batch, length, 8, generator=generator),)
    labels = torch.full((batch, length), -100)
    positions = [(0, 1), (0, 4), (1, 0), (2, 6)]
    for b, t in positions:
        labels[b, t] = int(torch.randint(vocab, (1,), generator=generator))
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[1, 5:] = 0
    inputs = LossInputs.for_tokens(
        ModelOutputs(student_logits, hidden), ModelOutputs(teacher_logits, teacher_hidden), labels, attention_mask
    )
    assert inputs.student.logits.shape == (4, vocab) and inputs.labels.shape == (4,)
    assert inputs.student.hidden_states[0].shape == (batch, length, 8)  # hidden states stay whole
    mix = LossMix(
        {"kd": {"weight": 5.0, "loss": SoftTargetKL()}, "mlm": {"weight": 2.0, "loss": HardLabelCE()},
         "cos": {"weight": 1.0, "loss": CosineHidden()}},
        temperature=temperature,
    )
    result = mix(inputs)
    # Reference: a loop over the masked positions only.
    kl, ce = [], []
    for b, t in positions:
        p_teacher = F.softmax(teacher_logits[b, t] / temperature, -1)
        log_p_student = F.log_softmax(student_logits[b, t] / temperature, -1)
        kl.append((p_teacher * (p_teacher.log() - log_p_student)).sum() * temperature**2)
        ce.append(-F.log_softmax(student_logits[b, t], -1)[labels[b, t]])
    assert result.unweighted["kd"].item() == pytest.approx(torch.stack(kl).mean().item(), rel=1e-5)
    assert result.unweighted["mlm"].item() == pytest.approx(torch.stack(ce).mean().item(), rel=1e-5)
    # The cosine still covers every real token.
    cos = cosine_hidden(hidden[0], teacher_hidden[0], attention_mask)
    assert result.unweighted["cos"].item() == pytest.approx(cos.item())
    expected = 5.0 * torch.stack(kl).mean() + 2.0 * torch.stack(ce).mean() + cos
    assert result.total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_batch_without_masked_tokens_gives_zero_not_nan():
    logits = torch.randn(2, 3, 5)
    inputs = LossInputs.for_tokens(ModelOutputs(logits), ModelOutputs(logits + 1), torch.full((2, 3), -100), torch.ones(2, 3))
    mix = LossMix({"kd": {"weight": 1.0, "loss": SoftTargetKL()}, "mlm": {"weight": 1.0, "loss": HardLabelCE()}})
    assert mix(inputs).total.item() == 0.0


def test_without_labels_every_real_token_counts():
    logits = torch.randn(2, 3, 5)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    inputs = LossInputs.for_tokens(ModelOutputs(logits), None, None, mask)
    assert torch.equal(inputs.student.logits, logits[mask.bool()])

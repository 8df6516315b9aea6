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

"""Masks from scores: per layer, per row, global and N:M keep what they should, masks only shrink,
and MaskSet keeps pruned weights at zero through AdamW steps."""

from __future__ import annotations

import torch
from torch import nn

from distill.pruning.masks import MaskSet, global_masks, layer_mask, n_m_mask, row_mask


def test_a_layer_mask_keeps_the_highest_scores():
    scores = torch.tensor([[0.1, 0.9, 0.3], [0.8, 0.2, 0.5]])
    assert layer_mask(scores, 0.5).tolist() == [[False, True, False], [True, False, True]]


def test_a_row_mask_keeps_the_same_number_in_every_row():
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.4], [5.0, 6.0, 7.0, 8.0]])
    assert row_mask(scores, 0.5).tolist() == [[False, True, False, True], [False, False, True, True]]


def test_2_of_4_keeps_exactly_two_of_every_four_consecutive_inputs():
    torch.manual_seed(0)
    scores = torch.randn(16, 64)
    mask = n_m_mask(scores, 2, 4)
    groups = mask.reshape(16, 16, 4)
    assert (groups.sum(-1) == 2).all()
    # The two kept are the two largest of their group.
    kept_min = torch.where(groups, scores.reshape(16, 16, 4), torch.inf).amin(-1)
    dropped_max = torch.where(~groups, scores.reshape(16, 16, 4), -torch.inf).amax(-1)
    assert (kept_min > dropped_max).all()


def test_2_of_4_on_its_way_prunes_a_rows_lowest_among_the_weights_the_pattern_drops():
    # Candidates (each group's 2 lowest): row 0 {0.1, 0.3 | 0.2, 0.6}, row 1 {2, 1 | 6, 5}.
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.4, 0.2, 0.8, 0.7, 0.6], [4.0, 3.0, 2.0, 1.0, 8.0, 7.0, 6.0, 5.0]])
    # 25% (2 of 8 per row): the 2 lowest candidates; row 1's both come from its first group.
    assert n_m_mask(scores, 2, 4, 0.25).tolist() == [
        [False, True, True, True, False, True, True, True],
        [True, True, False, False, True, True, True, True],
    ]
    # 37.5% (3 of 8): row 1's first group is at 2:4 already, so its third goes to 5, not to 3 (the
    # row's third lowest, which plain row pruning would take, leaving that group 1 of 4).
    assert n_m_mask(scores, 2, 4, 0.375).tolist() == [
        [False, True, False, True, False, True, True, True],
        [True, True, False, False, True, True, True, False],
    ]
    # At the pattern's own sparsity (and above it, or without one): exactly the pattern.
    for sparsity in (0.5, None):
        assert torch.equal(n_m_mask(scores, 2, 4, sparsity), n_m_mask(scores, 2, 4))


def test_2_of_4_reached_gradually_only_loses_weights_and_ends_on_the_pattern():
    torch.manual_seed(0)
    scores = torch.randn(8, 64)
    mask = torch.ones_like(scores, dtype=torch.bool)
    for sparsity in (0.0, 0.1, 0.22, 0.37, 0.45, 0.5):
        gated = scores.masked_fill(~mask, -torch.inf)  # as the callback scores a pruned weight
        new = n_m_mask(gated, 2, 4, sparsity)
        assert not (new & ~mask).any()  # nothing comes back
        assert ((~new).sum(1) == round(sparsity * 64)).all()  # every row at the schedule's sparsity
        assert (new.reshape(8, 16, 4).sum(-1) >= 2).all()  # no group below the pattern on the way
        mask = new
    assert (mask.reshape(8, 16, 4).sum(-1) == 2).all()


def test_a_global_mask_uses_one_threshold_across_layers():
    scores = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.tensor([10.0, 20.0])}
    masks = global_masks(scores, 0.5)
    assert masks["a"].tolist() == [False, False, False, True] and masks["b"].tolist() == [True, True]


def test_masks_only_lose_entries_when_updated():
    masks = MaskSet({"w": torch.tensor([True, False, True, True])})
    masks.update({"w": torch.tensor([True, True, False, True])})
    assert masks.get("w").tolist() == [True, False, False, True]


def test_pruned_weights_stay_zero_through_adamw_steps():
    torch.manual_seed(0)
    layer = nn.Linear(8, 8)
    masks = MaskSet({"weight": layer_mask(layer.weight.detach().abs(), 0.75)})
    masks.apply(layer)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(5):
        layer(torch.randn(4, 8)).square().sum().backward()
        masks.mask_gradients(layer)
        optimizer.step()
        optimizer.zero_grad()
        masks.apply(layer)
        assert (layer.weight[~masks.get("weight")] == 0).all()
    assert int((layer.weight == 0).sum()) == 48
    assert masks.figures()["sparsity"] == 0.75

"""Wanda's scores are |W|·‖X_j‖₂ with the norms of the layer's real (unpadded) input tokens; the
callback's masks are those scores' per-row choice."""

from __future__ import annotations

import torch
from test_structured import _batches, _bert, layer_input_tokens

from distill.calibration import input_statistics
from distill.callbacks.pruning import Pruning
from distill.pruning.masks import row_mask
from distill.pruning.scores import wanda_scores


def test_wanda_scores_equal_a_hand_computation_on_a_small_layer():
    weight = torch.tensor([[1.0, -2.0, 0.5], [0.1, 0.2, -3.0]])
    inputs = torch.tensor([[1.0, 0.0, 2.0], [3.0, 1.0, 0.0]])
    norms = inputs.square().sum(0).sqrt()  # ‖X_j‖₂ = [√10, 1, 2]
    expected = torch.tensor([[10**0.5, 2.0, 1.0], [0.1 * 10**0.5, 0.2, 6.0]])
    torch.testing.assert_close(wanda_scores(weight, norms), expected)
    assert row_mask(expected, 1 / 3).tolist() == [[True, True, False], [True, False, True]]


def test_the_callbacks_wanda_masks_come_from_the_layers_input_norms():
    model = _bert()
    batches = _batches()
    callback = Pruning(sparsity=0.5, criterion="wanda", schedule="one_shot")
    masks = callback.compute_masks(model, lambda: batches, 0.5)
    name = "bert.encoder.layer.0.attention.self.query"
    norms = layer_input_tokens(model, name, batches).square().sum(0).sqrt()
    torch.testing.assert_close(input_statistics(model, [name], batches)[name].norms, norms)
    expected = row_mask(model.get_submodule(name).weight.abs() * norms[None, :], 0.5)
    assert torch.equal(masks[f"{name}.weight"], expected)
    assert "classifier.weight" not in masks and len(masks) == 2 * 6 + 1  # 6 Linear per layer + pooler

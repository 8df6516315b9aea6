"""SparseGPT: its mask is the OBS saliency w²/U_jj² by hand, it beats magnitude pruning on the
reconstruction error at the same sparsity, and N:M holds."""

from __future__ import annotations

import torch

from distill.pruning.masks import layer_mask, n_m_mask
from distill.calibration import inverse_hessian_factor
from distill.pruning.sparsegpt import sparsegpt_prune


def _correlated_inputs(n: int = 512, k: int = 32) -> torch.Tensor:
    torch.manual_seed(0)
    mixing = torch.randn(k, k) / k**0.5 + torch.eye(k)
    scales = torch.logspace(-1, 1, k)  # features of very different size, as real activations are
    return (torch.randn(n, k) @ mixing) * scales


def test_the_mask_is_the_obs_saliency_computed_by_hand():
    X = _correlated_inputs()
    W = torch.randn(16, 32)
    H = 2 * X.T @ X / X.shape[0]
    damped = H + 0.01 * H.diagonal().mean() * torch.eye(32)
    U = torch.linalg.cholesky(torch.linalg.inv(damped), upper=True)
    expected = layer_mask(W.square() / U.diagonal().square(), 0.5)  # one block: all 32 columns
    _, mask = sparsegpt_prune(W, H, 0.5)
    assert torch.equal(mask, expected)
    U_code, _ = inverse_hessian_factor(H, W)
    torch.testing.assert_close(U_code, U, rtol=1e-4, atol=1e-5)


def test_sparsegpt_reconstructs_the_layer_output_better_than_magnitude_pruning():
    X = _correlated_inputs()
    torch.manual_seed(1)
    W = torch.randn(16, 32)
    H = 2 * X.T @ X / X.shape[0]
    for sparsity in (0.5, 0.7):
        pruned, mask = sparsegpt_prune(W, H, sparsity)
        assert (pruned[~mask] == 0).all() and int((~mask).sum()) == round(sparsity * W.numel())
        magnitude = W * layer_mask(W.abs(), sparsity)
        error = (X @ (W - pruned).T).square().mean()
        baseline = (X @ (W - magnitude).T).square().mean()
        assert error < 0.7 * baseline, (sparsity, float(error), float(baseline))


def test_sparsegpt_2_of_4_keeps_two_of_every_four_and_beats_magnitude_2_of_4():
    X = _correlated_inputs()
    torch.manual_seed(2)
    W = torch.randn(8, 32)
    H = 2 * X.T @ X / X.shape[0]
    pruned, mask = sparsegpt_prune(W, H, pattern=(2, 4), block_size=16)
    assert (mask.reshape(8, 8, 4).sum(-1) == 2).all() and (pruned[~mask] == 0).all()
    magnitude = W * n_m_mask(W.abs(), 2, 4)
    assert (X @ (W - pruned).T).square().mean() < (X @ (W - magnitude).T).square().mean()


def test_weights_pruned_earlier_stay_pruned():
    X = _correlated_inputs()
    W = torch.randn(8, 32)
    keep = torch.rand(8, 32) > 0.3
    _, mask = sparsegpt_prune(W, 2 * X.T @ X / 512, 0.6, keep=keep)
    assert not (mask & ~keep).any()

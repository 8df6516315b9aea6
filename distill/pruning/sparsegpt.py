"""SparseGPT (Frantar & Alistarh 2023): one-shot pruning that updates the kept weights so the layer's
output on the calibration inputs changes as little as possible.

"SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot" (ICML 2023,
arXiv:2301.00774). A layer's weight ``W`` (``N × K``) is pruned column by column against the
Hessian of its reconstruction error, ``H = 2 XᵀX / n`` (damped: ``+ λI``, ``λ = 0.01·mean(diag H)``),
with ``U`` the upper Cholesky factor of ``(H + λI)⁻¹``. Every block of 128 columns first chooses its
mask by the optimal-brain-surgeon saliency

    score_ij = w_ij² / U_jj²        (lowest pruned: ``sparsity`` of the block's entries),

or, for an N:M pattern, the ``M − N`` lowest of every ``M`` columns per row, chosen when the group's
first column is reached; then each column ``j`` is pruned and its error spread over the columns not
yet visited:

    e = (w_j − m_j ⊙ w_j) / U_jj,     W[:, j:] −= e · U[j, j:]

(the later blocks are updated once per block, ``W[:, b₁:] −= E · U[b₀:b₁, b₁:]``). This is GPTQ's
loop (:mod:`distill.quantization.gptq`) with "set to zero" in place of "round". Weights already
pruned by an earlier mask stay pruned. Our own code: torchao has no SparseGPT, and its Wanda
sparsifier works through ``torch.ao.pruning`` parametrizations.
"""

from __future__ import annotations

import torch

from distill.calibration import inverse_hessian_factor
from distill.pruning.masks import layer_mask

#: Columns whose mask is chosen together, and the lazy-update block.
BLOCK_SIZE = 128


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float = 0.5,
    pattern: tuple[int, int] | None = None,
    keep: torch.Tensor | None = None,
    block_size: int = BLOCK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune ``weight`` (``N × K``) to ``sparsity`` (or the N:M ``pattern``) by SparseGPT for
    ``hessian`` (``K × K``); returns the updated weight (zeros where pruned, in the weight's dtype)
    and the mask (``True``: kept). ``keep``: a mask the result stays inside (earlier pruning)."""
    U, W = inverse_hessian_factor(hessian, weight)
    rows, columns = W.shape
    mask = torch.ones_like(W, dtype=torch.bool) if keep is None else keep.bool().clone()
    for b0 in range(0, columns, block_size):
        b1 = min(b0 + block_size, columns)
        Wb, Ub = W[:, b0:b1], U[b0:b1, b0:b1]
        errors = torch.zeros_like(Wb)
        d = Ub.diagonal()
        if pattern is None:
            scores = Wb.square() / d.square()
            scores[~mask[:, b0:b1]] = -torch.inf
            mask[:, b0:b1] &= layer_mask(scores, sparsity)
        for j in range(b1 - b0):
            if pattern is not None and j % pattern[1] == 0:
                n, m = pattern
                group = slice(j, j + m)
                scores = Wb[:, group].square() / d[group].square()
                scores[~mask[:, b0:b1][:, group]] = -torch.inf
                kept = torch.zeros_like(scores, dtype=torch.bool)
                kept.scatter_(1, torch.topk(scores, n, dim=1).indices, True)
                mask[:, b0 + j : b0 + j + m] &= kept
            w = Wb[:, j]
            errors[:, j] = (w - w * mask[:, b0 + j]) / Ub[j, j]
            Wb[:, j:] -= errors[:, j : j + 1] * Ub[j : j + 1, j:]  # in place: Wb is a view of W
        W[:, b1:] -= errors @ U[b0:b1, b1:]
    W[~mask] = 0  # exact zeros (the update leaves them at rounding-error size)
    return W.to(weight.dtype), mask

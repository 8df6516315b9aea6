"""Importance scores of single weights (larger: kept longer).

- magnitude: ``|w_ij|`` (Han et al. 2015, "Learning both Weights and Connections").
- Wanda: ``|w_ij| · ‖X_j‖₂``, the weight times the norm of its input feature over the calibration
  tokens ("A Simple and Effective Pruning Approach for Large Language Models", Sun et al. 2024,
  arXiv:2306.11695): a small weight on a large activation matters as much as a large one.
"""

from __future__ import annotations

import torch


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().abs().float()


def wanda_scores(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    """``|W| · ‖X_j‖₂`` for ``weight`` (``N × K``) and the ``K`` input-feature norms."""
    return magnitude_scores(weight) * input_norms.to(weight.device).float()[None, :]

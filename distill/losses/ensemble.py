"""Combining several teachers' predictions into one teacher (ensemble distillation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def normalised_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """``w_k / Σ_j w_j``; every weight must be a finite number > 0."""
    bad = {name: w for name, w in weights.items() if not 0 < float(w) < float("inf")}
    if not weights or bad:
        raise ValueError(f"teacher weights must be finite numbers > 0, got {dict(weights)}")
    total = sum(float(weight) for weight in weights.values())
    return {name: float(weight) / total for name, weight in weights.items()}


def ensemble_logits(
    logits: Sequence[torch.Tensor], weights: Sequence[float], temperature: float = 1.0
) -> torch.Tensor:
    r"""Logits of the weighted mixture of several teachers' softened distributions.

    .. math:: z_{ens} = T \cdot \log \sum_k \tilde w_k\, \mathrm{softmax}(z_k / T),
              \qquad \tilde w_k = w_k / \textstyle\sum_j w_j

    computed in log space as :math:`T \cdot \mathrm{logsumexp}_k(\log \tilde w_k +
    \log\mathrm{softmax}(z_k/T))`, in float32. It is built so that
    :math:`\mathrm{softmax}(z_{ens}/T) = \sum_k \tilde w_k\, \mathrm{softmax}(z_k/T)` exactly: a
    temperature-``T`` term (``SoftTargetKL``, ``SoftCrossEntropy``) reading ``z_ens`` sees the
    mixture of the teachers' tempered probabilities (Hinton et al. 2015, §4), not the
    softmax of averaged logits. ``T`` must be the temperature the terms apply.

    Args:
        logits: one ``(..., C)`` tensor per teacher, same shape.
        weights: one weight > 0 per teacher (normalised here).
        temperature: ``T > 0``.

    Returns:
        ``(..., C)`` float32.
    """
    if len(logits) != len(weights) or not logits:
        raise ValueError(f"ensemble_logits: {len(logits)} logit tensors for {len(weights)} weights")
    shapes = {tuple(tensor.shape) for tensor in logits}
    if len(shapes) > 1:
        raise ValueError(f"ensemble_logits: the teachers' logits differ in shape: {sorted(shapes)}")
    normalised = normalised_weights(dict(enumerate(weights)))
    log_weights = torch.tensor([normalised[index] for index in range(len(weights))]).log()
    stacked = torch.stack([tensor.float() for tensor in logits])  # (K, ..., C)
    log_probs = torch.log_softmax(stacked / temperature, dim=-1)
    log_weights = log_weights.to(stacked.device).view(-1, *([1] * (stacked.dim() - 1)))
    return temperature * torch.logsumexp(log_weights + log_probs, dim=0)


def ensemble_predictions(predictions: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    r"""Weighted mean :math:`\sum_k \tilde w_k\, y_k` of regression predictions (one-output heads), float32."""
    normalised = normalised_weights(dict(enumerate(weights)))
    return sum(normalised[index] * tensor.float() for index, tensor in enumerate(predictions))

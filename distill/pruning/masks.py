"""Pruning masks: which weights a score keeps, and the one place masks are applied to a model.

A mask is a boolean tensor the shape of the parameter it masks (``True``: kept). Scores are
"larger is more important"; a weight already pruned enters with score ``−inf``, so masks only ever
lose entries (a pruned weight never comes back). Patterns:

- per layer: the ``(1 − s)·numel`` highest scores of each weight are kept;
- global: one threshold over all pruned weights together (layers end up with different sparsity);
- per output row: the ``(1 − s)·K`` highest of each row (Wanda's comparison group, Sun et al. 2024);
- N:M semi-structured: the ``N`` highest of every ``M`` consecutive input features of each row
  (2:4 is what sparse tensor cores run; Mishra et al. 2021, arXiv:2104.08378); on a gradual
  schedule each row first loses its lowest weights among those the pattern would drop, until it
  holds the pattern exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn


def kept_count(count: int, sparsity: float) -> int:
    """How many of ``count`` entries a ``sparsity`` keeps: ``count − round(sparsity · count)``."""
    return count - int(round(sparsity * count))


def _top(scores: torch.Tensor, keep: int, dim: int | None = None) -> torch.Tensor:
    """``True`` at the ``keep`` highest scores (of all, or along ``dim``)."""
    if dim is None:
        mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
        mask[torch.topk(scores.flatten(), keep, sorted=False).indices] = True
        return mask.view_as(scores)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    return mask.scatter_(dim, torch.topk(scores, keep, dim=dim, sorted=False).indices, True)


def layer_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the highest ``(1 − sparsity)`` of one tensor's scores."""
    return _top(scores, kept_count(scores.numel(), sparsity))


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the highest ``(1 − sparsity)`` of each output row (``scores`` is ``N × K``)."""
    return _top(scores, kept_count(scores.shape[1], sparsity), dim=1)


def n_m_mask(scores: torch.Tensor, n: int, m: int, sparsity: float | None = None) -> torch.Tensor:
    """Keep the ``n`` highest of every ``m`` consecutive input features of each row
    (``scores`` is ``N × K``, ``K`` a multiple of ``m``).

    ``sparsity`` below the pattern's ``1 − n/m`` (a gradual schedule on its way to the pattern):
    the candidates are the ``m − n`` lowest of each group, and each row prunes its
    ``round(sparsity · K)`` lowest-scoring candidates, so no group ever loses more than ``m − n``
    and at ``1 − n/m`` every candidate goes: exactly the pattern. Weights already pruned (score
    ``−inf``) are the lowest candidates, so a rising sparsity never brings one back.
    """
    rows, columns = scores.shape
    if columns % m:
        raise ValueError(f"an {n}:{m} pattern needs the input width to be a multiple of {m}; got {columns}")
    groups = scores.reshape(rows, columns // m, m)
    pattern = _top(groups, n, dim=2).reshape(rows, columns)
    if sparsity is None or kept_count(columns, sparsity) <= columns // m * n:
        return pattern
    candidates = scores.masked_fill(pattern, torch.inf)  # the pattern's kept weights are never pruned
    return ~_top(-candidates, columns - kept_count(columns, sparsity), dim=1)


def global_masks(scores: Mapping[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Keep the highest ``(1 − sparsity)`` of all tensors' scores together (one threshold)."""
    flat = torch.cat([score.flatten() for score in scores.values()])
    kept = _top(flat, kept_count(flat.numel(), sparsity))
    masks, offset = {}, 0
    for name, score in scores.items():
        masks[name] = kept[offset : offset + score.numel()].view_as(score)
        offset += score.numel()
    return masks


class MaskSet:
    """The masks of a model's parameters by parameter name; applied to the model in one place.

    :meth:`apply` zeroes the pruned entries of the parameters (after every optimizer step, so a
    pruned weight never comes back, AdamW's momentum included); :meth:`mask_gradients` zeroes
    their gradients before the step (the optimizer's moments of a pruned weight stay empty).
    """

    def __init__(self, masks: Mapping[str, torch.Tensor] | None = None) -> None:
        self.masks: dict[str, torch.Tensor] = {name: mask.bool() for name, mask in (masks or {}).items()}

    def __bool__(self) -> bool:
        return bool(self.masks)

    def get(self, name: str) -> torch.Tensor | None:
        return self.masks.get(name)

    def update(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Replace or add masks; an existing mask only loses entries (intersected with the new one)."""
        for name, mask in masks.items():
            mask = mask.bool()
            old = self.masks.get(name)
            self.masks[name] = mask if old is None else (mask & old.to(mask.device))

    def _pairs(self, model: nn.Module) -> Iterator[tuple[nn.Parameter, torch.Tensor]]:
        parameters = dict(model.named_parameters())
        for name, mask in self.masks.items():
            parameter = parameters.get(name)
            if parameter is None:
                raise KeyError(f"pruning mask for {name!r}: the model has no such parameter")
            if mask.device != parameter.device:
                mask = self.masks[name] = mask.to(parameter.device)
            yield parameter, mask

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero every pruned entry of ``model``'s parameters."""
        for parameter, mask in self._pairs(model):
            parameter.mul_(mask)

    @torch.no_grad()
    def mask_gradients(self, model: nn.Module) -> None:
        for parameter, mask in self._pairs(model):
            if parameter.grad is not None:
                parameter.grad.mul_(mask)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: mask.cpu() for name, mask in self.masks.items()}

    def figures(self) -> dict[str, float | int | dict[str, float]]:
        """Sparsity per parameter and over all masked entries (the fraction set to zero)."""
        total = sum(mask.numel() for mask in self.masks.values())
        pruned = sum(int((~mask).sum()) for mask in self.masks.values())
        return {
            "pruned": pruned,
            "masked": total,
            "sparsity": pruned / total if total else 0.0,
            "per_parameter": {name: 1.0 - float(mask.float().mean()) for name, mask in self.masks.items()},
        }

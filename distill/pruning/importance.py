"""Importance of structured units (FFN neurons, attention heads) read at the input ``a`` of the
Linear layer that consumes them (the FFN's down projection, the attention's output projection),
over calibration batches, padding left out. A unit is ``group`` consecutive input features of that
layer (1 for a neuron, ``head_dim`` for a head).

- RMS activation: ``sqrt(Σ_t Σ_{j∈u} a_tj² / n)`` over the ``n`` real tokens (Minitron's activation
  criterion, Muralidharan et al. 2024, arXiv:2407.14679).
- First-order Taylor: ``Σ_x |Σ_t Σ_{j∈u} a_tj · ∂L/∂a_tj|`` per example ``x``, ``L`` the model's own
  task loss on the batch's labels: the change in ``L`` when the unit is gated off to first order
  (Michel et al. 2019, "Are Sixteen Heads Really Better than One?", arXiv:1905.10650, for heads;
  Molchanov et al. 2019 for neurons).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from distill.calibration import calibrating, input_statistics, model_inputs


def rms_importance(
    model: nn.Module, readers: Mapping[str, str], calibration: Iterable[dict[str, torch.Tensor]], group: int = 1
) -> dict[str, torch.Tensor]:
    """The RMS activation of every unit, by key of ``readers`` (key → the name of the Linear layer
    whose input holds the units)."""
    stats = input_statistics(model, readers.values(), calibration)
    scores = {}
    for key, name in readers.items():
        entry = stats[name]
        scores[key] = (entry.square_sums.reshape(-1, group).sum(1) / entry.count).sqrt()
    return scores


def taylor_importance(
    model: nn.Module, readers: Mapping[str, str], calibration: Iterable[dict[str, torch.Tensor]], group: int = 1
) -> dict[str, torch.Tensor]:
    """The first-order Taylor importance of every unit, by key of ``readers``. ``L`` is
    ``model(**inputs, labels=labels).loss``; the batches must carry ``labels``. Only the activations'
    gradients are taken (``torch.autograd.grad``): the parameters' ``.grad`` are left untouched."""
    scores: dict[str, torch.Tensor] = {}
    seen: dict[str, torch.Tensor] = {}

    def capture(key: str):
        def pre_hook(module: nn.Module, args: tuple):
            activation = args[0] if args[0].requires_grad else args[0].detach().requires_grad_()
            seen[key] = activation
            return (activation, *args[1:])

        return pre_hook

    # Eval mode (no dropout): the scores of the function that ships.
    pre_hooks = {name: capture(key) for key, name in readers.items()}
    with calibrating(model, pre_hooks=pre_hooks) as device, torch.enable_grad():
        for batch in calibration:
            if "labels" not in batch:
                raise ValueError("gradient importance needs labelled calibration batches (a 'labels' field)")
            inputs = model_inputs(batch, device)
            loss = model(**inputs, labels=batch["labels"].to(device)).loss
            keys = list(seen)
            grads = torch.autograd.grad(loss, [seen[key] for key in keys])
            mask = inputs.get("attention_mask")
            for key, grad in zip(keys, grads):
                product = (seen[key] * grad).detach().float()
                if mask is not None and product.shape[:-1] == mask.shape:
                    product = product * mask[..., None]
                per_unit = product.reshape(product.shape[0], -1, product.shape[-1] // group, group).sum((1, 3))
                per_example = per_unit.abs().sum(0)
                scores[key] = per_example if key not in scores else scores[key] + per_example
            seen.clear()
    return scores

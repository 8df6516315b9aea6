"""Structured pruning of feed-forward neurons: whole rows and columns, so the exported student is a
dense, physically smaller model that transformers loads with its stock config.

A transformer layer's FFN is ``down(act(up(x)))`` (BERT: ``intermediate.dense`` → ``output.dense``;
Llama: ``gate_proj``/``up_proj`` → ``down_proj``). Neuron ``k`` is row ``k`` of every up projection
(and its bias) and column ``k`` of the down projection; masking those zeroes the neuron's
contribution exactly (``act(0)·0 = 0``; GELU(0) = SiLU(0) = 0), and removing them at export gives
the same function. The same number of neurons is kept in every layer, so ``intermediate_size`` stays
one number in the config.

Importance, over the calibration batches, read at the down projection's input ``a``
(:mod:`distill.pruning.importance`): ``activation``, the root-mean-square ``sqrt(Σ_t a_tk² / n)``
over the real tokens (Minitron), or ``gradient``, the first-order Taylor term ``Σ_x |Σ_t a_tk ·
∂L/∂a_tk|`` (Molchanov et al. 2019).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from distill.pruning.importance import rms_importance, taylor_importance

#: The part of a module name that names its transformer layer (``encoder.layer.3``, ``layers.3``, ``h.3``).
LAYER_PREFIX = re.compile(r"^(.*?(?:^|\.)(?:layer|layers|h|block|blocks)\.\d+)\.")


@dataclass
class FeedForward:
    """One layer's FFN: the Linear layers whose outputs are its neurons, and the one that reads them."""

    layer: str
    up: list[str] = field(default_factory=list)
    down: str = ""


def intermediate_size(model: nn.Module) -> int:
    size = getattr(getattr(model, "config", None), "intermediate_size", None)
    if not isinstance(size, int):
        raise ValueError(f"{type(model).__name__}: its config has no intermediate_size; FFN pruning needs one")
    return size


def feed_forwards(model: nn.Module) -> list[FeedForward]:
    """Every layer's FFN, found by shape: up projections are the Linear layers with
    ``intermediate_size`` outputs, the down projection the one with ``intermediate_size`` inputs."""
    width = intermediate_size(model)
    found: dict[str, FeedForward] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        match = LAYER_PREFIX.match(name)
        if match is None:
            continue
        entry = found.setdefault(match.group(1), FeedForward(match.group(1)))
        if module.out_features == width:
            entry.up.append(name)
        elif module.in_features == width:
            if entry.down:
                raise ValueError(f"{match.group(1)}: two Linear layers read {width} features ({entry.down}, {name})")
            entry.down = name
    ffns = [entry for entry in found.values() if entry.up or entry.down]
    broken = [entry.layer for entry in ffns if not (entry.up and entry.down)]
    if broken or not ffns:
        raise ValueError(
            f"{type(model).__name__}: no up/down projection pair of width {width} in {broken or 'any layer'}"
        )
    return ffns


def neuron_importance(model: nn.Module, ffns: list[FeedForward], calibration) -> dict[str, torch.Tensor]:
    """RMS activation of every FFN neuron over the calibration tokens, by layer."""
    return rms_importance(model, {ffn.layer: ffn.down for ffn in ffns}, calibration)


def neuron_gradient_importance(model: nn.Module, ffns: list[FeedForward], calibration) -> dict[str, torch.Tensor]:
    """``Σ_x |Σ_t a_tk · ∂L/∂a_tk|`` of every FFN neuron (padding left out), by layer
    (:func:`~distill.pruning.importance.taylor_importance`)."""
    return taylor_importance(model, {ffn.layer: ffn.down for ffn in ffns}, calibration)


def kept_neurons(importance: torch.Tensor, keep: int, alive: torch.Tensor | None = None) -> torch.Tensor:
    """``True`` for the ``keep`` most important neurons (among those still ``alive``)."""
    scores = importance.clone().float()
    if alive is not None:
        scores[~alive.to(scores.device)] = -torch.inf
    kept = torch.zeros_like(scores, dtype=torch.bool)
    kept[torch.topk(scores, keep, sorted=False).indices] = True
    return kept


def neuron_masks(model: nn.Module, ffn: FeedForward, kept: torch.Tensor) -> dict[str, torch.Tensor]:
    """The parameter masks that switch off the neurons not ``kept``: rows (and bias entries) of the
    up projections, columns of the down projection."""
    masks = {}
    for name in ffn.up:
        layer = model.get_submodule(name)
        masks[f"{name}.weight"] = kept[:, None].expand_as(layer.weight).clone()
        if layer.bias is not None:
            masks[f"{name}.bias"] = kept.clone()
    down = model.get_submodule(ffn.down)
    masks[f"{ffn.down}.weight"] = kept[None, :].expand_as(down.weight).clone()
    return masks


def slice_linear(layer: nn.Linear, index: torch.Tensor, dim: int) -> None:
    """Keep the ``index`` rows (``dim=0``: outputs) or columns (``dim=1``: inputs) of ``layer``."""
    with torch.no_grad():
        weight = layer.weight.index_select(dim, index.to(layer.weight.device)).clone()
        layer.weight = nn.Parameter(weight, requires_grad=layer.weight.requires_grad)
        if dim == 0:
            if layer.bias is not None:
                bias = layer.bias.index_select(0, index.to(layer.bias.device)).clone()
                layer.bias = nn.Parameter(bias, requires_grad=layer.bias.requires_grad)
            layer.out_features = len(index)
        else:
            layer.in_features = len(index)


def shrink_feed_forwards(model: nn.Module, kept: dict[str, torch.Tensor]) -> int:
    """Remove the neurons not ``kept`` (by layer) from ``model``, in place, and set its config's
    ``intermediate_size``; every layer must keep the same number. Returns that number."""
    counts = {layer: int(mask.sum()) for layer, mask in kept.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"FFN pruning keeps the same number of neurons per layer; got {counts}")
    width = next(iter(counts.values()))
    for ffn in feed_forwards(model):
        if ffn.layer not in kept:
            raise ValueError(f"{ffn.layer}: no neuron mask (masks for {sorted(kept)})")
        index = kept[ffn.layer].nonzero().flatten()
        for name in ffn.up:
            slice_linear(model.get_submodule(name), index, dim=0)
        slice_linear(model.get_submodule(ffn.down), index, dim=1)
    model.config.intermediate_size = width
    return width

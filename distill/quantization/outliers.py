"""LLM.int8()-style outlier features (Dettmers et al. 2022, "LLM.int8(): 8-bit Matrix Multiplication
for Transformers at Scale"), as an option of the int8 PTQ formats.

A few input features of a Linear layer carry activations far larger than the rest (|x| > 6 in the
paper); quantizing them with the others stretches every token's int8 scale and rounds the small
features away. Such features are split off and computed in float:

    y = Q(x_R) · Q(W_R)ᵀ + x_O · W_Oᵀ + b

with ``O`` the outlier features (columns of ``W``) and ``R`` the rest. The paper finds ``O`` per
batch at run time; here it is fixed from calibration batches (the features whose largest |x| over
them exceeds the threshold), so the exported model has a static layout. The share of features that
is, per layer and in total, goes to ``metrics.json``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from distill.calibration import run_calibration
from distill.quantization.modules import set_module


class OutlierLinear(nn.Module):
    """A Linear layer split into a quantizable part (``main``, the weight with the outlier columns
    zeroed, which the int8 conversion then quantizes) and float outlier columns.

    ``forward(x) = main(x with the outlier features zeroed) + x[..., index] @ outlier_weightᵀ``.
    """

    def __init__(self, in_features: int, out_features: int, count: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.main = nn.Linear(in_features, out_features, bias=bias)
        self.register_buffer("outlier_index", torch.zeros(count, dtype=torch.long))
        self.register_buffer("outlier_weight", torch.zeros(out_features, count))

    @classmethod
    def split(cls, linear: nn.Linear, index: torch.Tensor) -> OutlierLinear:
        layer = cls(linear.in_features, linear.out_features, len(index), linear.bias is not None)
        weight = linear.weight.detach()
        layer.outlier_index.copy_(index)
        layer.outlier_weight = weight[:, index].clone()
        main = weight.clone()
        main[:, index] = 0.0
        layer.main.weight = nn.Parameter(main, requires_grad=False)
        if linear.bias is not None:
            layer.main.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        regular = x.index_fill(-1, self.outlier_index, 0.0)
        outliers = x.index_select(-1, self.outlier_index)
        return self.main(regular) + F.linear(outliers, self.outlier_weight.to(x.dtype))


def input_maxima(model: nn.Module, names: list[str], calibration: Iterable[dict]) -> dict[str, torch.Tensor]:
    """Per named Linear layer, the largest |input| of each input feature over the calibration
    batches (padding tokens included: they pass through the layers too)."""
    maxima: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(_module, inputs, _output):
            value = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(dim=0)
            maxima[name] = torch.maximum(maxima[name], value) if name in maxima else value
        return record

    run_calibration(model, {name: hook(name) for name in names}, calibration)
    return maxima


def split_outlier_features(
    model: nn.Module, names: list[str], calibration: Iterable[dict], threshold: float
) -> dict[str, int]:
    """Replace each named Linear whose inputs exceed ``threshold`` in some feature by an
    :class:`OutlierLinear`; returns the number of outlier features per layer (0s included)."""
    counts = {}
    for name, maximum in input_maxima(model, names, calibration).items():
        index = torch.nonzero(maximum > threshold).flatten()
        counts[name] = len(index)
        if len(index):
            set_module(model, name, OutlierLinear.split(model.get_submodule(name), index))
    return counts

"""BitNet b1.58 (Ma et al. 2024, "The Era of 1-bit LLMs"): ternary weights, int8 activations.

    W_q = γ · clamp(round(W / γ), −1, 1),          γ = mean|W| (one scale per weight tensor)
    x_q = clamp(round(x · 127 / max|x|), −128, 127) · max|x| / 127    (per token: the last axis)

Training sees both through straight-through estimators, ``v + (quantize(v) − v).detach()``: the
forward pass uses the quantized value, the backward pass the identity (Bengio et al. 2013).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Guards the scales against all-zero tensors and tokens.
EPS = 1e-5


def ternary_codes(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The codes in {−1, 0, +1} (int8) and the absmean scale γ of ``weight``."""
    gamma = weight.detach().abs().mean().clamp_min(EPS)
    return (weight.detach() / gamma).round().clamp(-1, 1).to(torch.int8), gamma


def int8_per_token(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to int8 per token by its absolute maximum, returned in ``x``'s dtype (no STE)."""
    scale = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp_min(EPS)
    return (x * scale).round().clamp(-128, 127) / scale


def straight_through(value: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """``quantized`` in the forward pass, the gradient of ``value`` in the backward pass."""
    return value + (quantized - value).detach()


class BitLinear(nn.Linear):
    """A Linear layer trained with ternary fake-quant weights and int8 per-token activations.

    ``fake_quant_enabled = False`` makes it a plain Linear (a QAT run's full-precision warm-up).
    :meth:`to_ternary` gives the converted layer.
    """

    fake_quant_enabled: bool = True

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> BitLinear:
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        layer.weight = linear.weight  # the same Parameter objects: an optimizer built earlier keeps them
        layer.bias = linear.bias
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fake_quant_enabled:
            return F.linear(x, self.weight, self.bias)
        codes, gamma = ternary_codes(self.weight)
        weight = straight_through(self.weight, codes.to(self.weight.dtype) * gamma)
        return F.linear(straight_through(x, int8_per_token(x)), weight, self.bias)

    def to_ternary(self) -> TernaryLinear:
        codes, gamma = ternary_codes(self.weight)
        bias = None if self.bias is None else self.bias.detach().clone()
        return TernaryLinear(codes, gamma.to(self.weight.dtype), bias)


class TernaryLinear(nn.Module):
    """A converted BitNet layer: int8 codes in {−1, 0, +1}, one float scale, a float bias.

    ``y = (int8_per_token(x) @ codes.T) · γ + b``: the weight is never stored in float.
    """

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = codes.shape
        # A (frozen) parameter, as a Linear's weight is: parameter counts and reports include it.
        self.codes = nn.Parameter(codes.to(torch.int8), requires_grad=False)
        self.register_buffer("scale", scale.reshape(()).detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.codes.to(x.dtype) * self.scale.to(x.dtype)
        return F.linear(int8_per_token(x), weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, ternary, int8 activations"

"""BitNet b1.58 (Ma et al. 2024, "The Era of 1-bit LLMs"): ternary weights, int8 activations.

    W_q = γ · clamp(round(W / γ), −1, 1),          γ = mean|W| (one scale per weight tensor)
    x_q = clamp(round(x · 127 / max|x|), −128, 127) · max|x| / 127    (per token: the last axis)

Training sees both through straight-through estimators, ``v + (quantize(v) − v).detach()``: the
forward pass uses the quantized value, the backward pass the identity (Bengio et al. 2013).

With a learned scale (``range_learning``), ``γ`` is a parameter set to ``mean|W|`` when fake-quant
starts and trained with the weights (LSQ, Esser et al. 2020): ``W_q = γ · clamp(round(W/γ), −1, 1)``
with the rounding straight-through, so ``∂W_q/∂γ = round(W/γ) − W/γ`` where ``|W/γ| ≤ 1`` and
``±1`` where the code is clamped, and ``∂W_q/∂W`` is 1 inside that range and 0 outside.
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


def learned_ternary(weight: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``γ · clamp(round(W/γ), −1, 1)`` differentiable in ``γ`` and ``W`` (LSQ's estimator)."""
    clipped = (weight / gamma).clamp(-1, 1)  # clamp first: the gradient stops where |W/γ| > 1
    return straight_through(clipped, clipped.round()) * gamma


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
    def from_linear(cls, linear: nn.Linear, learn_scale: bool = False) -> BitLinear:
        """``learn_scale``: ``γ`` becomes the parameter ``learned_gamma`` (set to ``mean|W|`` now;
        :meth:`reset_scale` sets it again), instead of ``mean|W|`` at every step."""
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        layer.weight = linear.weight  # the same Parameter objects: an optimizer built earlier keeps them
        layer.bias = linear.bias
        layer.learned_gamma = None
        if learn_scale:
            layer.learned_gamma = nn.Parameter(ternary_codes(linear.weight)[1].clone())
        return layer

    def reset_scale(self) -> None:
        """A learned ``γ`` set to ``mean|W|`` of the weight now, in place."""
        with torch.no_grad():
            self.learned_gamma.copy_(ternary_codes(self.weight)[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fake_quant_enabled:
            return F.linear(x, self.weight, self.bias)
        if self.learned_gamma is not None:
            weight = learned_ternary(self.weight, self.learned_gamma)
        else:
            codes, gamma = ternary_codes(self.weight)
            weight = straight_through(self.weight, codes.to(self.weight.dtype) * gamma)
        return F.linear(straight_through(x, int8_per_token(x)), weight, self.bias)

    def to_ternary(self) -> TernaryLinear:
        if self.learned_gamma is not None:
            gamma = self.learned_gamma.detach()
            codes = (self.weight.detach() / gamma).round().clamp(-1, 1).to(torch.int8)
        else:
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

"""Per-input-feature scaling before quantization: AWQ (weight-only) and SmoothQuant (W8A8).

Both rewrite a Linear layer ``y = x Wᵀ + b`` as the same function in float,

    y = (x ⊘ s) (W · diag(s))ᵀ + b,

and quantize ``W · diag(s)`` instead of ``W``; ``s`` (one positive number per input feature) is where
they differ:

- **AWQ** ("AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration", Lin et
  al., MLSys 2024, arXiv:2306.00978): ``s = s_x^α / sqrt(max(s_x^α) · min(s_x^α))`` with ``s_x_j =
  mean_t |x_tj|`` over the calibration tokens, ``α`` chosen from ``{0, 1/G, …, (G−1)/G}`` (``G = 20``)
  to minimise the layer's output error on the calibration inputs,

      ‖X Wᵀ − (X ⊘ s) Q(W · diag(s))ᵀ‖² / n = tr(D H Dᵀ),   D = W − Q(W · diag(s)) · diag(s)⁻¹,   H = XᵀX / n,

  where ``Q`` is the round-to-nearest the conversion then applies. Weights that meet large activations
  are scaled up before rounding, so their relative error shrinks. ``α = 0`` is plain RTN, so on the
  calibration data AWQ is never worse than RTN.
- **SmoothQuant** ("SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language
  Models", Xiao et al., ICML 2023, arXiv:2211.10438): ``s_j = max_t |x_tj|^α / max_i |w_ij|^(1−α)``
  (``α = 0.5``, the migration strength) moves activation outliers into the weights, so the dynamic
  per-token int8 activations lose less.

The papers fold ``1/s`` into the operation before the layer (a LayerNorm's γ and β). BERT is post-LN:
its LayerNorm outputs also feed the residual path, so folding would change the model. Here the scale
stays explicit: :class:`InputScaledLinear` multiplies its input by ``input_scale = 1/s`` before the
(quantized) inner layer, one elementwise product per layer, and the export writes it
(``quantization.json``, ``input_scaled``).

torchao 0.18 has both (``torchao.prototype.awq``, ``torchao.prototype.smoothquant``), but they hand the
scale to the weight tensor's ``act_pre_scale``, which only its ``Int4Tensor`` (CUDA packages) and
``Int8Tensor`` carry; ``IntxUnpackedToInt8Tensor``, what our int2 to int8 conversion and export use,
has none. So the search and the module are our own; the rounding is torchao's
(:func:`rtn_dequantized` runs the conversion's own config).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from distill.calibration import input_statistics
from distill.quantization.formats import INT_FORMATS, QuantizationScheme
from distill.quantization.modules import _base_config, _torchao, quantized_modules, set_module
from distill.quantization.outliers import input_maxima

#: AWQ's grid of α values: ``i / AWQ_GRID`` for ``i = 0 … AWQ_GRID − 1`` (the paper's 20).
AWQ_GRID = 20
#: SmoothQuant's default migration strength.
SMOOTHQUANT_ALPHA = 0.5
#: Floor on activation and weight statistics (a feature that never fires gets a finite scale).
EPSILON = 1e-5


class InputScaledLinear(nn.Module):
    """``forward(x) = linear(x · input_scale)``: a Linear layer whose input features are rescaled
    first (``input_scale = 1/s`` after :meth:`equalize`). The inner ``linear`` is what quantization
    converts."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.register_buffer("input_scale", torch.ones(in_features))

    @classmethod
    def equalize(cls, linear: nn.Linear, scale: torch.Tensor) -> InputScaledLinear:
        """The same function as ``linear``: weight ``W · diag(scale)``, input times ``1 / scale``."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None)
        weight = linear.weight.detach()
        scale = scale.to(device=weight.device, dtype=torch.float32)
        layer.linear.weight = nn.Parameter((weight.float() * scale[None, :]).to(weight.dtype), requires_grad=False)
        if linear.bias is not None:
            layer.linear.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        layer.input_scale = (1.0 / scale).to(weight.dtype)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.input_scale.to(x.dtype))


def rtn_dequantized(weight: torch.Tensor, scheme: QuantizationScheme) -> torch.Tensor:
    """``weight`` rounded to ``scheme``'s weight format and back, by the torchao config the
    conversion (:func:`~distill.quantization.convert_student`) applies to an unprepared Linear."""
    ao = _torchao()
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device, dtype=weight.dtype)
    layer.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    config = _base_config(ao, INT_FORMATS[scheme.weights], scheme.group_size, scheme.symmetric, None)
    ao["quantize_"](layer, config)
    return layer.weight.dequantize()


def output_error(weight: torch.Tensor, dequantized: torch.Tensor, gram: torch.Tensor) -> float:
    """``tr(D H Dᵀ)`` for ``D = weight − dequantized`` and ``H = gram`` (``XᵀX / n``): the mean
    squared output error of using ``dequantized`` on the calibration inputs, summed over outputs."""
    difference = (weight.float() - dequantized.float())
    return float(((difference @ gram.float()) * difference).sum())


def awq_scale(
    weight: torch.Tensor, mean_abs: torch.Tensor, gram: torch.Tensor, scheme: QuantizationScheme, grid: int = AWQ_GRID
) -> tuple[float, torch.Tensor, list[float]]:
    """AWQ's search for one layer: ``(α, s, errors)`` with ``s`` the scale of the ``α`` whose output
    error (:func:`output_error`) is smallest, ``errors`` the error of every ``α`` on the grid."""
    activation = mean_abs.float().clamp(min=EPSILON)
    best, errors = None, []
    for step in range(grid):
        alpha = step / grid
        scale = activation.pow(alpha)
        scale = scale / (scale.max() * scale.min()).sqrt()
        dequantized = rtn_dequantized(weight * scale[None, :].to(weight.dtype), scheme).float() / scale[None, :]
        error = output_error(weight, dequantized, gram)
        errors.append(error)
        if best is None or error < best[0]:
            best = (error, alpha, scale)
    return best[1], best[2], errors


def smoothquant_scale(weight: torch.Tensor, input_max: torch.Tensor, alpha: float = SMOOTHQUANT_ALPHA) -> torch.Tensor:
    """``s_j = max|x_j|^α / max_i |w_ij|^(1−α)``."""
    weight_max = weight.detach().abs().amax(dim=0).float().clamp(min=EPSILON)
    return input_max.float().clamp(min=EPSILON).pow(alpha) / weight_max.pow(1 - alpha)


def _linears(model: nn.Module, scheme: QuantizationScheme) -> dict[str, nn.Linear]:
    linears = {name: module for name, module in quantized_modules(model, scheme) if isinstance(module, nn.Linear)}
    odd = [f"{name} ({type(module).__name__})" for name, module in linears.items() if type(module) is not nn.Linear]
    if odd:
        raise ValueError(f"{', '.join(odd[:3])}: AWQ and SmoothQuant rescale a float student's nn.Linear layers")
    return linears


def awq_equalize(
    model: nn.Module, scheme: QuantizationScheme, calibration: Iterable[dict[str, torch.Tensor]], grid: int = AWQ_GRID
) -> dict[str, float]:
    """Replace every Linear layer ``scheme`` quantizes by an :class:`InputScaledLinear` with AWQ's
    scale, in place (the function is unchanged; the conversion then rounds the rescaled weights).
    Returns the ``α`` chosen per layer."""
    if scheme.weights not in INT_FORMATS or scheme.activations:
        raise ValueError(f"AWQ here is weight-only to {list(INT_FORMATS)}; got {scheme.describe()}")
    linears = _linears(model, scheme)
    stats = input_statistics(model, linears, calibration, gram=True)
    chosen = {}
    for name, linear in linears.items():
        entry = stats.pop(name)
        alpha, scale, _ = awq_scale(linear.weight.detach(), entry.mean_abs, entry.gram / entry.count, scheme, grid)
        chosen[name] = alpha
        set_module(model, name, InputScaledLinear.equalize(linear, scale))
    return chosen


def smoothquant_equalize(
    model: nn.Module, scheme: QuantizationScheme, calibration: Iterable[dict[str, torch.Tensor]],
    alpha: float = SMOOTHQUANT_ALPHA,
) -> dict[str, float]:
    """Replace every Linear layer ``scheme`` quantizes by an :class:`InputScaledLinear` with
    SmoothQuant's scale, in place. Returns, per layer, how much the largest input feature's
    maximum shrank relative to the median feature's (``max/median`` before over after)."""
    linears = _linears(model, scheme)
    maxima = input_maxima(model, list(linears), calibration)
    flattening = {}
    for name, linear in linears.items():
        scale = smoothquant_scale(linear.weight, maxima[name], alpha)
        before = maxima[name].float().clamp(min=EPSILON)
        after = before / scale
        flattening[name] = float((before.max() / before.median()) / (after.max() / after.median()))
        set_module(model, name, InputScaledLinear.equalize(linear, scale))
    return flattening

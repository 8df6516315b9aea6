"""GPTQ (Frantar et al. 2023): post-training quantization of a student's Linear layers to the integer
formats of :mod:`distill.quantization.formats`, with calibration batches, as an alternative to
round-to-nearest (RTN, :func:`~distill.quantization.convert_student` on an unprepared model).

GPTQ ("GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers", ICLR 2023,
arXiv:2210.17323) quantizes each layer's weight ``W`` (``N × K``) so that its output on the
calibration inputs ``X`` (``n × K``) changes little, ``min ||X Wᵀ − X Ŵᵀ||²``, whose curvature is the
Hessian

    H = 2 XᵀX / n,      damped: H + λ I,   λ = 0.01 · mean(diag H).

With ``U`` the upper Cholesky factor of ``(H + λ I)⁻¹``, the columns are quantized left to right; the
rounding error of column ``j`` is spread over the columns not yet quantized (the optimal brain
surgeon update):

    q_j = quant(w_j),    e = (w_j − dequant(q_j)) / U_jj,    W[:, j:] −= e · U[j, j:]

Columns go in blocks of 128 (whole groups: a group never straddles two blocks): inside a block the
update is applied column by column, to the later blocks once per block (``W[:, b₁:] −= E · U[b₀:b₁,
b₁:]``, the paper's lazy batch updates). Per-group scales (and zero points) are chosen when the
group's first column is reached, from the group's columns as updated so far (the paper's grouping
variant); per-channel schemes choose one scale per row from the original weights.

Our own: the Hessians and the loop above. torchao 0.18's ``torchao.prototype.gptq`` only produces
``Int4Tensor`` (needs the CUDA ``mslk`` package), per-row ``Int8Tensor`` or NVFP4, asserts a CUDA
device and has no int2 / int3 nor ``IntxUnpackedToInt8Tensor`` (what our export writes).
torchao's: the scale and zero point of a block (``choose_qparams_affine``, exactly as its RTN
``IntxWeightOnlyConfig`` chooses them, same shapes and dtypes), the rounding rule ``clamp(round(w ·
(1 / S)) + Z, q_min, q_max)``, the weight container ``IntxUnpackedToInt8Tensor``, and RTN for the
embedding tables (``scheme.embeddings``), which have no input to calibrate on.

All layers are quantized from inputs recorded in one pass of the *float* model (not layer by layer
on the outputs of the already quantized layers, as the paper does for its sequential variant):
one calibration pass, at the price of ignoring the earlier layers' quantization error. Padding
positions (``attention_mask == 0``) are left out of the Hessians.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from distill.calibration import input_statistics, inverse_hessian_factor
from distill.quantization.formats import INT_FORMATS, QuantizationScheme, width_problems
from distill.quantization.modules import _embeddings, _torchao, quantized_modules

#: Columns quantized before the later columns are updated (the paper's lazy batch size).
BLOCK_SIZE = 128


def gptq_quantize(
    model: nn.Module, scheme: QuantizationScheme, calibration: Iterable[dict[str, torch.Tensor]]
) -> nn.Module:
    """Quantize the Linear layers ``scheme`` selects by GPTQ, in place, from the inputs they see on
    ``calibration`` (batches of model inputs: ``model(**batch)``, targets left out); embedding
    tables, when ``scheme.embeddings`` is set, by round-to-nearest. The weights become torchao
    ``IntxUnpackedToInt8Tensor`` s, as RTN leaves them, so the quantized export writes them."""
    if scheme.weights == "ternary":
        raise ValueError(f"scheme.weights='ternary': GPTQ quantizes to the integer formats {list(INT_FORMATS)}")
    if scheme.activations:
        raise ValueError(f"scheme.activations={scheme.activations!r}: GPTQ here is weight-only; set activations=null")
    problems = width_problems("scheme", scheme, model)
    if problems:
        raise ValueError("; ".join(problems))
    linears = {name: module for name, module in quantized_modules(model, scheme) if isinstance(module, nn.Linear)}
    for name, module in linears.items():
        if type(module) is not nn.Linear:
            raise ValueError(
                f"{name} is a {type(module).__name__}: GPTQ quantizes a float student; "
                "convert a QAT-prepared one with convert_student"
            )
    stats = input_statistics(model, linears, calibration, gram=True)
    for name, module in linears.items():
        weight = _gptq_weight(module.weight.detach(), stats.pop(name).hessian(), scheme)
        module.weight = nn.Parameter(weight, requires_grad=False)
    _embeddings(model, scheme, _torchao(), step=None)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _gptq_weight(weight: torch.Tensor, hessian: torch.Tensor, scheme: QuantizationScheme) -> torch.Tensor:
    """The GPTQ codes of ``weight`` (``N × K``) for ``hessian`` (``K × K``), as torchao's tensor."""
    from torchao.quantization.quant_primitives import (
        _DTYPE_TO_QVALUE_BOUNDS,
        MappingType,
        choose_qparams_affine,
    )
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
        IntxUnpackedToInt8Tensor,
    )

    target_dtype = getattr(torch, scheme.weights)
    q_min, q_max = _DTYPE_TO_QVALUE_BOUNDS[target_dtype]
    mapping = MappingType.SYMMETRIC if scheme.symmetric else MappingType.ASYMMETRIC
    rows, columns = weight.shape
    group = scheme.group_size or columns
    block = BLOCK_SIZE if scheme.group_size is None else group * max(1, BLOCK_SIZE // group)

    U, W = inverse_hessian_factor(hessian, weight)

    codes = torch.empty(rows, columns, dtype=torch.int8, device=W.device)
    scales, zeros = [], []
    for b0 in range(0, columns, block):
        b1 = min(b0 + block, columns)
        Wb, Ub, errors = W[:, b0:b1], U[b0:b1, b0:b1], torch.zeros(rows, b1 - b0, device=W.device)
        for j in range(b1 - b0):
            column = b0 + j
            if column % group == 0:  # a new group: its scale from its columns as updated so far
                scale, zero = choose_qparams_affine(
                    W[:, column : column + group], mapping, (1, group), torch.int8, q_min, q_max,
                    zero_point_dtype=torch.int8, keepdim=True,
                )
                scale = scale.to(weight.dtype)
                scales.append(scale)
                zeros.append(zero)
                s, z = scale.float().squeeze(1), zero.float().squeeze(1)
            w = Wb[:, j]
            q = torch.clamp(torch.round(w * (1.0 / s)) + z, q_min, q_max)
            codes[:, column] = q.to(torch.int8)
            errors[:, j] = (w - (q - z) * s) / Ub[j, j]
            Wb[:, j:] -= errors[:, j : j + 1] * Ub[j : j + 1, j:]  # in place: Wb is a view of W
        W[:, b1:] -= errors @ U[b0:b1, b1:]
    return IntxUnpackedToInt8Tensor(
        codes, torch.cat(scales, dim=1), torch.cat(zeros, dim=1), target_dtype, (1, group), weight.dtype, None
    )

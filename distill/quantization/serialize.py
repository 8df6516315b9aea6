"""The quantized student on disk: integer codes bit-packed, scales and zero points beside them.

A converted student (:func:`distill.quantization.convert_student`) is written as

- ``quantized.safetensors``: every float tensor of the model as it is, and for each quantized weight
  ``<name>.qdata`` (codes ``q`` offset to ``q − q_min`` and packed ``bits`` per code, 8 / bits codes
  per byte for 2 and 4 bits), ``<name>.scale`` and, when asymmetric, ``<name>.zero_point``;
- ``quantization.json``: per quantized weight its format (bits, shape, block size, activation
  quantization), plus the scheme that produced them, and the layers whose layout differs from the
  stock model's: ``outliers`` (LLM.int8()-style split layers) and ``input_scaled`` (AWQ /
  SmoothQuant: the input times ``input_scale`` before the quantized layer).

The file is deliberately not ``model.safetensors``: ``from_pretrained`` on the folder fails loudly
instead of building a model whose quantized weights are missing. :func:`distill.export.load_student`
rebuilds the model from ``config.json`` and puts the same quantized tensors back, so it computes
exactly what the converted student computed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from distill.quantization.equalization import InputScaledLinear
from distill.quantization.modules import set_module
from distill.quantization.outliers import OutlierLinear
from distill.quantization.ternary import TernaryLinear

WEIGHTS_FILE = "quantized.safetensors"
MANIFEST_FILE = "quantization.json"
FORMAT_VERSION = 1


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed ``bits``-bit codes (any shape) → a flat uint8 tensor, ``bits`` bits per code, low bits first."""
    unsigned = (codes.reshape(-1).to(torch.int16) + (1 << (bits - 1))).to(torch.uint8)
    if bits == 8:
        return unsigned
    shifts = torch.arange(bits, dtype=torch.uint8)
    bit_planes = ((unsigned.unsqueeze(1) >> shifts) & 1).reshape(-1)
    bit_planes = torch.nn.functional.pad(bit_planes, (0, (-bit_planes.numel()) % 8))
    weights = (1 << torch.arange(8, dtype=torch.int16)).to(torch.uint8)
    return (bit_planes.reshape(-1, 8) * weights).sum(dim=1, dtype=torch.int16).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, shape: list[int]) -> torch.Tensor:
    """The inverse of :func:`pack_codes`: int8 codes of ``shape``."""
    count = int(torch.tensor(shape).prod()) if shape else 1
    if bits == 8:
        unsigned = packed.to(torch.int16)
    else:
        planes = (packed.unsqueeze(1) >> torch.arange(8, dtype=torch.uint8)) & 1
        planes = planes.reshape(-1)[: count * bits].reshape(count, bits).to(torch.int16)
        unsigned = (planes << torch.arange(bits, dtype=torch.int16)).sum(dim=1)
    return (unsigned - (1 << (bits - 1))).to(torch.int8).reshape(shape)


def _intx_class():
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
        IntxUnpackedToInt8Tensor,
        IntxUnpackedToInt8TensorActivationQuantization,
    )

    return IntxUnpackedToInt8Tensor, IntxUnpackedToInt8TensorActivationQuantization


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds converted (integer) weights."""
    return any(_entry(module) is not None for module in model.modules())


def _entry(module: nn.Module) -> str | None:
    if isinstance(module, TernaryLinear):
        return "ternary"
    weight = getattr(module, "weight", None)
    if weight is not None and type(weight).__name__ == "IntxUnpackedToInt8Tensor":
        return "intx"
    return None


def _bits(dtype: torch.dtype) -> int:
    return int(str(dtype).removeprefix("torch.int"))


def _activation_name(kind) -> str | None:
    """torchao's activation quantization (an enum or its string value) as its string."""
    return None if kind is None else str(getattr(kind, "value", kind))


def quantized_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors to write and the per-weight manifest of a converted ``model``."""
    tensors: dict[str, torch.Tensor] = {}
    weights: dict[str, Any] = {}
    covered: set[str] = set()
    for name, module in model.named_modules():
        kind = _entry(module)
        if kind == "ternary":
            key = f"{name}.weight"
            tensors[f"{key}.qdata"] = pack_codes(module.codes, 2)
            tensors[f"{key}.scale"] = module.scale.detach().reshape(1).clone()
            weights[key] = {"kind": "ternary", "bits": 2, "shape": list(module.codes.shape)}
            covered.update({f"{name}.codes", f"{name}.scale"})
        elif kind == "intx":
            key, weight = f"{name}.weight", module.weight
            bits = _bits(weight.target_dtype)
            tensors[f"{key}.qdata"] = pack_codes(weight.qdata, bits)
            tensors[f"{key}.scale"] = weight.scale.detach().clone()
            symmetric = not bool(torch.count_nonzero(weight.zero_point))
            if not symmetric:
                tensors[f"{key}.zero_point"] = weight.zero_point.detach().clone()
            weights[key] = {
                "kind": "intx",
                "bits": bits,
                "shape": list(weight.shape),
                "block_size": list(weight.block_size),
                "zero_point_dtype": str(weight.zero_point.dtype).removeprefix("torch."),
                "zero_point_shape": list(weight.zero_point.shape),
                "activation_quantization": _activation_name(weight.activation_quantization),
                "module": "embedding" if isinstance(module, nn.Embedding) else "linear",
            }
            covered.add(key)
    for key, value in model.state_dict().items():
        if key not in covered and key not in tensors:
            tensors[key] = value.detach().contiguous().clone()
    return tensors, weights


def outlier_layout(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The layers split by LLM.int8()-style outlier handling: their outlier count and bias."""
    return {
        name: {"count": len(module.outlier_index), "bias": module.main.bias is not None}
        for name, module in model.named_modules()
        if isinstance(module, OutlierLinear)
    }


def input_scaled_layout(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The layers AWQ or SmoothQuant rescaled (:class:`InputScaledLinear`): their bias."""
    return {
        name: {"bias": module.linear.bias is not None}
        for name, module in model.named_modules()
        if isinstance(module, InputScaledLinear)
    }


def write_quantized(model: nn.Module, directory: Path, scheme: dict | None) -> None:
    """``quantized.safetensors`` + ``quantization.json`` + ``config.json`` of a converted ``model``."""
    tensors, weights = quantized_state(model)
    manifest = {
        "format_version": FORMAT_VERSION, "scheme": scheme, "weights": weights,
        "outliers": outlier_layout(model), "input_scaled": input_scaled_layout(model),
    }
    model.config.architectures = [type(model).__name__]  # as save_pretrained does: load_student reads it
    model.config.save_pretrained(directory)
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": "distill-quantized"})
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


def read_quantized(model: nn.Module, directory: Path) -> nn.Module:
    """Put the tensors of ``directory`` into ``model`` (built from its ``config.json``), in place."""
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{directory / MANIFEST_FILE}: format_version {manifest.get('format_version')!r}; "
            f"this distill reads {FORMAT_VERSION}"
        )
    tensors = load_file(str(directory / WEIGHTS_FILE))
    quantized = manifest["weights"]
    for name, layout in manifest.get("outliers", {}).items():  # the split layers' shells, to load into
        linear = model.get_submodule(name)
        set_module(model, name, OutlierLinear(linear.in_features, linear.out_features, layout["count"], layout["bias"]))
    for name, layout in manifest.get("input_scaled", {}).items():
        linear = model.get_submodule(name)
        set_module(model, name, InputScaledLinear(linear.in_features, linear.out_features, layout["bias"]))
    plain = {key: value for key, value in tensors.items() if not key.rsplit(".", 1)[0] in quantized}
    missing, unexpected = model.load_state_dict(plain, strict=False)
    left = sorted(set(missing) - set(quantized))
    if left or unexpected:
        raise ValueError(
            f"{directory / WEIGHTS_FILE} does not fit the model of its config.json: "
            f"missing {left[:5]}, unexpected {unexpected[:5]}"
        )
    intx, activation_kind = None, None
    for key, entry in quantized.items():
        name = key.removesuffix(".weight")
        codes = unpack_codes(tensors[f"{key}.qdata"], entry["bits"], entry["shape"])
        if entry["kind"] == "ternary":
            bias = model.get_submodule(name).bias
            set_module(model, name, TernaryLinear(codes, tensors[f"{key}.scale"], None if bias is None else bias.detach()))
            continue
        if intx is None:
            intx, activation_kind = _intx_class()
        scale = tensors[f"{key}.scale"]
        zero_dtype = getattr(torch, entry["zero_point_dtype"])
        zero_point = tensors.get(f"{key}.zero_point")
        if zero_point is None:
            zero_point = torch.zeros(entry["zero_point_shape"], dtype=zero_dtype)
        activation = entry.get("activation_quantization")
        weight = intx(
            codes, scale, zero_point, getattr(torch, f"int{entry['bits']}"), tuple(entry["block_size"]),
            scale.dtype, activation_kind(activation) if activation else None,
        )
        model.get_submodule(name).weight = nn.Parameter(weight, requires_grad=False)
    return model.eval()


def has_quantized_export(directory: Path) -> bool:
    return (Path(directory) / MANIFEST_FILE).is_file()

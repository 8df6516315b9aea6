"""Swap a student's layers for fake-quant ones (QAT ``prepare``), switch them on and off, and
convert them to real quantized weights (``convert``), on torchao's QAT API.

Integer formats go through ``quantize_(student, QATConfig(..., step="prepare"|"convert"))``:
``FakeQuantizedLinear`` / ``FakeQuantizedEmbedding`` while training, then Linear and Embedding layers
whose weight is an ``IntxUnpackedToInt8Tensor`` (int8 codes, scales, zero points). Ternary layers are
:class:`~distill.quantization.ternary.BitLinear` → :class:`~distill.quantization.ternary.TernaryLinear`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from distill.quantization.formats import INT_FORMATS, QuantizationScheme
from distill.quantization.ternary import BitLinear, TernaryLinear


def _torchao() -> dict:
    """torchao's QAT and PTQ API by name (imported on first use: importing it costs ~2 s)."""
    from torchao.quantization import (
        Int8DynamicActivationIntxWeightConfig,
        IntxWeightOnlyConfig,
        PerAxis,
        PerGroup,
        quantize_,
    )
    from torchao.quantization.qat import FakeQuantizedEmbedding, FakeQuantizedLinear, IntxFakeQuantizeConfig, QATConfig
    from torchao.quantization.quant_primitives import MappingType

    return {
        "Int8DynamicActivationIntxWeightConfig": Int8DynamicActivationIntxWeightConfig,
        "IntxWeightOnlyConfig": IntxWeightOnlyConfig,
        "PerAxis": PerAxis,
        "PerGroup": PerGroup,
        "quantize_": quantize_,
        "FakeQuantizedEmbedding": FakeQuantizedEmbedding,
        "FakeQuantizedLinear": FakeQuantizedLinear,
        "IntxFakeQuantizeConfig": IntxFakeQuantizeConfig,
        "QATConfig": QATConfig,
        "MappingType": MappingType,
    }


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, TernaryLinear))


def _is_embedding(module: nn.Module) -> bool:
    return isinstance(module, nn.Embedding)


def quantized_modules(model: nn.Module, scheme: QuantizationScheme) -> Iterator[tuple[str, nn.Module]]:
    """The (name, module) pairs ``scheme`` quantizes: Linear layers, and embedding tables when
    ``scheme.embeddings`` is set, less the names ``scheme.exclude`` matches."""
    for name, module in model.named_modules():
        if not name or scheme.excluded(name):
            continue
        if _is_linear(module) or (scheme.embeddings and _is_embedding(module)):
            yield name, module


def _weight_config(ao, bits: int, group_size: int | None, symmetric: bool, range_learning: bool = False):
    """torchao's weight fake-quantizer config; ``range_learning``: static scales
    that are trained parameters instead of recomputed from each step's weights."""
    dtype = getattr(torch, f"int{bits}")
    learned = {"is_dynamic": False, "range_learning": True} if range_learning else {}
    if group_size is None:
        return ao["IntxFakeQuantizeConfig"](dtype, granularity="per_channel", is_symmetric=symmetric, **learned)
    return ao["IntxFakeQuantizeConfig"](dtype, group_size=group_size, is_symmetric=symmetric, **learned)


def _base_config(ao, bits: int, group_size: int | None, symmetric: bool, activations: str | None):
    """The torchao PTQ config that converts (or directly quantizes) with these settings."""
    dtype = getattr(torch, f"int{bits}")
    granularity = ao["PerAxis"](0) if group_size is None else ao["PerGroup"](group_size)
    mapping = ao["MappingType"].SYMMETRIC if symmetric else ao["MappingType"].ASYMMETRIC
    if activations == "int8":
        return ao["Int8DynamicActivationIntxWeightConfig"](
            weight_dtype=dtype, weight_granularity=granularity, weight_mapping_type=mapping
        )
    return ao["IntxWeightOnlyConfig"](weight_dtype=dtype, granularity=granularity, mapping_type=mapping)


def _selected(model: nn.Module, scheme: QuantizationScheme, kind) -> set[str]:
    return {name for name, module in quantized_modules(model, scheme) if kind(module)}


def is_prepared(model: nn.Module) -> bool:
    ao = _torchao()
    fake = (ao["FakeQuantizedLinear"], ao["FakeQuantizedEmbedding"], BitLinear)
    return any(isinstance(module, fake) for module in model.modules())


def prepare_student(model: nn.Module, scheme: QuantizationScheme, range_learning: bool = False) -> nn.Module:
    """Swap the layers ``scheme`` quantizes for fake-quant ones, in place (parameters are kept, so
    an optimizer holding them is unaffected). Already prepared: left as it is.

    ``range_learning`` (symmetric integer or ternary Linear weights): each block's scale ``S`` (a
    ternary layer's ``γ``) becomes a parameter of the student, set by :func:`initialize_ranges` and
    then trained by the same optimizer through the fake quantizer (LSQ, Esser et al. 2020:
    ``∂x̂/∂S = round(x/S) − x/S`` inside the code range, the clamped code outside; torchao's
    ``range_learning`` for the integer formats).
    """
    if is_prepared(model):
        return model
    ao = _torchao()
    linears = _selected(model, scheme, lambda m: type(m) is nn.Linear)
    if scheme.weights == "ternary":
        for name in linears:
            set_module(model, name, BitLinear.from_linear(model.get_submodule(name), learn_scale=range_learning))
    else:
        activation = (
            ao["IntxFakeQuantizeConfig"](torch.int8, granularity="per_token", is_symmetric=False)
            if scheme.activations == "int8"
            else None
        )
        weight = _weight_config(ao, INT_FORMATS[scheme.weights], scheme.group_size, scheme.symmetric, range_learning)
        ao["quantize_"](
            model,
            ao["QATConfig"](activation_config=activation, weight_config=weight, step="prepare"),
            filter_fn=lambda module, name: name in linears,
        )
    _embeddings(model, scheme, ao, step="prepare")
    if range_learning:
        initialize_ranges(model)
    return model


#: The parameter-name endings of the scales QAT with ``range_learning`` trains (torchao's integer
#: fake quantizers; ternary ``BitLinear``): parameters the student gains when the callback prepares
#: it (in ``setup``), so checkpoints hold them.
LEARNED_SCALES = (".weight_fake_quantizer.scale", ".learned_gamma")


def _range_learning_quantizers(model: nn.Module) -> Iterator[tuple[nn.Module, nn.Module]]:
    """(layer, weight fake quantizer) pairs whose scales are learned."""
    for module in model.modules():
        quantizer = getattr(module, "weight_fake_quantizer", None)
        if quantizer is not None and getattr(quantizer.config, "range_learning", False):
            yield module, quantizer


def initialize_ranges(model: nn.Module) -> int:
    """Set every learned scale to what round-to-nearest chooses for its layer's weight *now*
    (symmetric integers: ``S = max|w| / ((q_max − q_min) / 2)`` per block; ternary: ``γ = mean|W|``),
    in place: the first call makes the integer scales parameters of the student (before the
    optimizer is built), later calls (when fake-quant switches on after full-precision steps)
    overwrite their values, so an optimizer holding them keeps them. Returns how many layers were set."""
    count = 0
    for module in model.modules():
        if isinstance(module, BitLinear) and module.learned_gamma is not None:
            module.reset_scale()  # γ = mean|W|
            count += 1
    for module, quantizer in _range_learning_quantizers(model):
        fresh = type(quantizer)(quantizer.config)
        fresh._initialized = True
        with torch.no_grad():
            fresh(module.weight)
        if isinstance(quantizer.scale, nn.Parameter):
            with torch.no_grad():
                quantizer.scale.copy_(fresh.scale)
        else:
            quantizer.scale = fresh.scale
            del quantizer.zero_point  # symmetric: Z = 0, fixed; a buffer, so it follows the student's device
            quantizer.register_buffer("zero_point", fresh.zero_point, persistent=False)
            quantizer._initialized = True
        count += 1
    return count


def _embeddings(model: nn.Module, scheme: QuantizationScheme, ao, step: str | None) -> None:
    """Embedding tables: weight-only, ``scheme.embeddings`` bits; ``step=None`` quantizes directly (PTQ)."""
    if not scheme.embeddings:
        return
    names = _selected(model, scheme, _is_embedding)
    bits, size = INT_FORMATS[scheme.embeddings], scheme.embedding_group_size
    if step == "prepare":
        config = ao["QATConfig"](weight_config=_weight_config(ao, bits, size, True), step="prepare")
    else:
        base = _base_config(ao, bits, size, True, None)
        config = base if step is None else ao["QATConfig"](base, step="convert")
    ao["quantize_"](model, config, filter_fn=lambda module, name: name in names)


def set_fake_quant(model: nn.Module, enabled: bool) -> None:
    """Switch every fake quantizer of ``model`` on or off (off: the layers compute in full precision)."""
    for module in model.modules():
        if isinstance(module, BitLinear):
            module.fake_quant_enabled = enabled
        for attribute in ("weight_fake_quantizer", "activation_fake_quantizer"):
            quantizer = getattr(module, attribute, None)
            if quantizer is not None:
                quantizer.enabled = enabled


def convert_student(model: nn.Module, scheme: QuantizationScheme) -> nn.Module:
    """Real quantized weights, in place: a prepared (fake-quant) student is converted with the same
    settings, so it computes what it computed in training; an unprepared one is quantized
    post-training by round-to-nearest (PTQ)."""
    ao = _torchao()
    prepared = is_prepared(model)
    if scheme.weights == "ternary":
        for name, module in list(quantized_modules(model, scheme)):
            if isinstance(module, nn.Linear):
                bit = module if isinstance(module, BitLinear) else BitLinear.from_linear(module)
                set_module(model, name, bit.to_ternary())
    else:
        linears = _selected(model, scheme, lambda m: isinstance(m, nn.Linear))
        base = _base_config(ao, INT_FORMATS[scheme.weights], scheme.group_size, scheme.symmetric, scheme.activations)
        config = ao["QATConfig"](base, step="convert") if prepared else base
        ao["quantize_"](model, config, filter_fn=lambda module, name: name in linears)
    _embeddings(model, scheme, ao, step="convert" if prepared else None)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted path ``name`` of ``model`` (replacing what is there)."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)

"""GPTQ: a smaller output error than round-to-nearest on correlated inputs, valid codes in torchao's
tensor (the scale shapes RTN gives), a student that saves and loads back, and the formats it refuses."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_bert

from distill.export import load_student, save_student
from distill.quantization import QuantizationScheme, convert_student
from distill.quantization.gptq import gptq_quantize


def _inputs(n: int, sample: int) -> torch.Tensor:
    """Strongly correlated features: rank-8 signal in 64 dimensions, plus a little noise."""
    mixing = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1 + sample)
    return torch.randn(n, 8, generator=generator) @ mixing + 0.1 * torch.randn(n, 64, generator=generator)


def _layer(seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 16))


@pytest.mark.parametrize(
    "scheme",
    [QuantizationScheme("int3", group_size=32), QuantizationScheme("int2", group_size=32, symmetric=False)],
    ids=lambda s: s.describe(),
)
def test_gptq_has_a_smaller_output_error_than_round_to_nearest(scheme):
    model = _layer()
    weight = model[0].weight.detach().clone()
    rtn = convert_student(copy.deepcopy(model), scheme)  # round-to-nearest
    calibration = _inputs(512, sample=0)
    gptq_quantize(model, scheme, [{"input": chunk} for chunk in calibration.split(128)])

    for x in (calibration, _inputs(512, sample=1)):  # the calibration inputs and fresh ones alike
        reference = x @ weight.T
        gptq_error = (reference - x @ model[0].weight.dequantize().T).square().sum()
        rtn_error = (reference - x @ rtn[0].weight.dequantize().T).square().sum()
        assert gptq_error < 0.5 * rtn_error  # measured: 0.10–0.15 of RTN's


@pytest.mark.parametrize(
    "scheme",
    [
        QuantizationScheme("int2", group_size=32),
        QuantizationScheme("int3", group_size=None, symmetric=False),
        QuantizationScheme("int4", group_size=16, symmetric=False),
        QuantizationScheme("int8", group_size=None),
    ],
    ids=lambda s: s.describe(),
)
def test_gptq_codes_are_valid_and_shaped_as_round_to_nearest(scheme):
    model = _layer()
    rtn = convert_student(copy.deepcopy(model), scheme)[0].weight
    gptq_quantize(model, scheme, [{"input": _inputs(256, sample=0)}])
    weight = model[0].weight

    assert type(weight).__name__ == "IntxUnpackedToInt8Tensor" and not weight.requires_grad
    bits = int(scheme.weights.removeprefix("int"))
    assert weight.qdata.dtype == torch.int8
    assert -(2 ** (bits - 1)) <= int(weight.qdata.min()) and int(weight.qdata.max()) <= 2 ** (bits - 1) - 1
    for field in ("scale", "zero_point"):
        assert getattr(weight, field).shape == getattr(rtn, field).shape
        assert getattr(weight, field).dtype == getattr(rtn, field).dtype
    assert (weight.target_dtype, tuple(weight.block_size), weight.dtype) == (
        rtn.target_dtype, tuple(rtn.block_size), rtn.dtype,
    )
    if scheme.symmetric:
        assert not weight.zero_point.any()
    group = weight.block_size[1]
    scale = weight.scale.repeat_interleave(group, dim=1)
    zero = weight.zero_point.float().repeat_interleave(group, dim=1)
    assert torch.equal(weight.dequantize(), scale * (weight.qdata.float() - zero))


@pytest.mark.parametrize(
    "scheme",
    [
        QuantizationScheme("int4", group_size=16, symmetric=False),
        QuantizationScheme("int2", group_size=32, embeddings="int8"),  # embedding tables: round-to-nearest
    ],
    ids=lambda s: s.describe(),
)
def test_a_gptq_student_saves_and_loads_back_computing_the_same(scheme, tmp_path, random_batch):
    model = tiny_bert(num_layers=2, hidden=64, dropout=0.0).eval()
    calibration = [random_batch, {**random_batch, "input_ids": random_batch["input_ids"].flip(1)}]
    gptq_quantize(model, scheme, calibration)
    linears = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    quantized = [name for name in linears if type(model.get_submodule(name).weight).__name__ != "Parameter"]
    assert quantized == [name for name in linears if name != "classifier"]  # the scheme's default exclude
    embedding_type = type(model.bert.embeddings.word_embeddings.weight).__name__
    assert embedding_type == ("IntxUnpackedToInt8Tensor" if scheme.embeddings else "Parameter")

    save_student(model, None, tmp_path / "gptq", quantization={"format": scheme.describe(), "method": "gptq"})
    inputs = {k: v for k, v in random_batch.items() if k != "labels"}
    assert torch.equal(load_student(tmp_path / "gptq")(**inputs).logits, model(**inputs).logits)


@pytest.mark.parametrize(
    ("scheme", "field"),
    [(QuantizationScheme("ternary"), "scheme.weights"), (QuantizationScheme("int4", activations="int8"), "scheme.activations")],
)
def test_gptq_refuses_ternary_weights_and_quantized_activations(scheme, field):
    with pytest.raises(ValueError, match=field):
        gptq_quantize(_layer(), scheme, [{"input": _inputs(16, sample=0)}])

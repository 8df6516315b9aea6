"""Fake-quant against the affine formula x ≈ S·(q − Z), per-group scales by hand, straight-through
gradients, BitNet ternary weights, and the checks of a scheme's settings."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_bert
from torch import nn

from distill.quantization import QuantizationScheme, convert_student, prepare_student
from distill.quantization.formats import scheme_problems, width_problems
from distill.quantization.modules import set_fake_quant
from distill.quantization.ternary import (
    BitLinear,
    TernaryLinear,
    int8_per_token,
    ternary_codes,
)


def prepared_linear(scheme: QuantizationScheme, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 8))
    return prepare_student(model, scheme)[0]


def symmetric_by_hand(weight: torch.Tensor, bits: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S = max|w| / ((q_max − q_min) / 2) per group of ``group_size`` inputs; q = clamp(round(w / S))."""
    q_min, q_max = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    groups = weight.reshape(weight.shape[0], -1, group_size)
    scale = groups.abs().amax(dim=-1, keepdim=True) / ((q_max - q_min) / 2)
    codes = (groups * (1.0 / scale)).round().clamp(q_min, q_max)  # torchao multiplies by 1/S
    return (codes * scale).reshape(weight.shape), scale.squeeze(-1)


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
def test_fake_quant_is_the_symmetric_affine_formula_with_per_group_scales_and_within_one_step(bits):
    layer = prepared_linear(QuantizationScheme(f"int{bits}", group_size=16))
    fake = layer.weight_fake_quantizer(layer.weight.detach())
    expected, scale = symmetric_by_hand(layer.weight.detach(), bits, 16)
    torch.testing.assert_close(fake, expected, atol=1e-6, rtol=0)
    step = scale.repeat_interleave(16, dim=1)
    assert ((fake - layer.weight).abs() <= step + 1e-7).all()  # within one quantization step
    assert len(torch.unique(fake[0, :16] / step[0, :16]).round()) <= 2**bits


def test_converted_asymmetric_weights_dequantize_as_s_times_q_minus_z():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 8))
    scheme = QuantizationScheme("int4", group_size=32, symmetric=False)
    original = model[0].weight.detach().clone()
    convert_student(model, scheme)  # PTQ: round-to-nearest
    weight = model[0].weight
    assert weight.qdata.min() >= -8 and weight.qdata.max() <= 7
    scale = weight.scale.repeat_interleave(32, dim=1)
    zero = weight.zero_point.repeat_interleave(32, dim=1).float()
    dequantized = scale * (weight.qdata.float() - zero)
    torch.testing.assert_close(weight.dequantize(), dequantized)
    assert ((dequantized - original).abs() <= scale + 1e-7).all()
    assert torch.count_nonzero(weight.zero_point) > 0  # asymmetric: zero points are used


def test_gradients_pass_straight_through_the_fake_quantizers():
    layer = prepared_linear(QuantizationScheme("int2", group_size=16))
    direction = torch.randn_like(layer.weight)
    (layer.weight_fake_quantizer(layer.weight) * direction).sum().backward()
    # torchao's clipped straight-through estimator: d fq(w) / dw = 1 where w / S rounds inside the
    # code range [-2, 1], 0 where it is clamped (int2 symmetric clamps the largest positive weights).
    _, scale = symmetric_by_hand(layer.weight.detach(), 2, 16)
    ratio = layer.weight.detach() * (1.0 / scale.repeat_interleave(16, dim=1))
    inside = (ratio.round() >= -2) & (ratio.round() <= 1)
    assert 0 < (~inside).sum() < inside.sum()
    torch.testing.assert_close(layer.weight.grad, torch.where(inside, direction, torch.zeros_like(direction)))

    bit = BitLinear.from_linear(nn.Linear(16, 4))
    x = torch.randn(3, 16, requires_grad=True)
    bit(x).sum().backward()
    codes, gamma = ternary_codes(bit.weight)
    # Straight through the weight and the activation quantizers: the gradients of a plain Linear
    # whose weight is the quantized one, at the quantized input.
    torch.testing.assert_close(x.grad, (codes.float() * gamma).sum(0).expand(3, 16))
    torch.testing.assert_close(bit.weight.grad, int8_per_token(x.detach()).sum(0).expand(4, 16))


def test_ternary_weights_take_three_values_with_the_absmean_scale():
    torch.manual_seed(0)
    weight = torch.randn(32, 64) * 0.02
    codes, gamma = ternary_codes(weight)
    assert set(codes.unique().tolist()) == {-1, 0, 1}
    torch.testing.assert_close(gamma, weight.abs().mean())
    torch.testing.assert_close(codes.float(), (weight / weight.abs().mean()).round().clamp(-1, 1))
    layer = BitLinear.from_linear(nn.Linear(64, 32))
    layer.weight.data.copy_(weight)
    converted = layer.to_ternary()
    assert isinstance(converted, TernaryLinear) and converted.codes.dtype == torch.int8
    assert sum(p.numel() for p in converted.parameters()) == 32 * 64 + 32  # codes and bias: counted as a Linear's
    assert len((converted.codes.float() * converted.scale).unique()) == 3
    x = torch.randn(5, 64)
    torch.testing.assert_close(converted(x), layer(x), atol=1e-6, rtol=0)


def test_int8_per_token_quantizes_each_token_by_its_absolute_maximum():
    x = torch.tensor([[1.0, -0.5, 0.25], [100.0, 3.0, -50.0]])
    scale = 127.0 / torch.tensor([[1.0], [100.0]])
    torch.testing.assert_close(int8_per_token(x), (x * scale).round() / scale)
    assert int8_per_token(x)[1, 0] == 100.0  # the maximum is represented exactly


@pytest.mark.parametrize(
    "scheme",
    [
        QuantizationScheme("int8", activations="int8", embeddings="int8"),
        QuantizationScheme("int2", group_size=16, embeddings="int4", embedding_group_size=16),
        QuantizationScheme("ternary", embeddings="int8"),
    ],
    ids=lambda s: s.describe(),
)
def test_prepare_keeps_the_parameters_and_conversion_keeps_what_training_computed(scheme, random_batch):
    model = tiny_bert(num_layers=2, dropout=0.0).eval()
    inputs = {k: v for k, v in random_batch.items() if k != "labels"}
    reference = model(**inputs).logits
    parameters = [id(p) for p in model.parameters()]
    prepare_student(model, scheme)
    assert [id(p) for p in model.parameters()] == parameters  # an optimizer built before still holds them
    set_fake_quant(model, False)
    torch.testing.assert_close(model(**inputs).logits, reference, atol=0, rtol=0)
    set_fake_quant(model, True)
    fake = model(**inputs).logits
    assert not torch.equal(fake, reference)
    convert_student(model, scheme)
    torch.testing.assert_close(model(**inputs).logits, fake, atol=1e-5, rtol=0)
    assert type(model.classifier) is nn.Linear and model.classifier.weight.dtype == torch.float32  # excluded


def test_scheme_problems_name_every_bad_field():
    problems = scheme_problems(
        "compress.quantize", weights="int9", group_size=0, activations="fp8", embeddings="int1", exclude="classifier"
    )
    joined = "\n".join(problems)
    for field in ("weights='int9'", "group_size=0", "activations='fp8'", "embeddings='int1'", "exclude='classifier'"):
        assert f"compress.quantize.{field}" in joined
    assert "['int8', 'int4', 'int3', 'int2', 'ternary']" in joined
    assert scheme_problems("q", weights="ternary", group_size=32) == [
        "q.group_size=32: ternary (BitNet b1.58) uses one absmean scale per tensor; set group_size=null"
    ]
    assert scheme_problems("q", weights="int4", group_size=32, embeddings="int8") == []


def test_a_group_size_that_does_not_divide_a_layer_is_named_with_the_sizes_that_do():
    with torch.device("meta"):
        model = tiny_bert(num_layers=1, hidden=48)
    (problem,) = width_problems("compress.quantize", QuantizationScheme("int4", group_size=32), model)
    assert problem.startswith("compress.quantize.group_size=32: does not divide the width 48 of bert.encoder")
    assert "[16]" in problem
    assert width_problems("compress.quantize", QuantizationScheme("int4", group_size=16), model) == []

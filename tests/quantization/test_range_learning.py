"""Learned scales (LSQ-style range learning on torchao): set to round-to-nearest's scales, trained
through the fake quantizer, re-set in place from later weights, and used by the export."""

from __future__ import annotations

import torch
from conftest import tiny_bert
from test_formats import symmetric_by_hand
from torch import nn

from distill.quantization import QuantizationScheme, convert_student, prepare_student
from distill.quantization.modules import initialize_ranges
from distill.quantization.ternary import BitLinear, TernaryLinear

INT2 = QuantizationScheme("int2", group_size=16)


def learned_linear(scheme: QuantizationScheme = INT2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return prepare_student(nn.Sequential(nn.Linear(64, 8)), scheme, range_learning=True)[0]


def test_learned_scales_start_as_round_to_nearest_and_are_parameters_of_the_student():
    layer = learned_linear()
    scale = layer.weight_fake_quantizer.scale
    assert isinstance(scale, nn.Parameter) and scale.requires_grad
    assert any(parameter is scale for parameter in layer.parameters())  # the optimizer will hold it
    expected, expected_scale = symmetric_by_hand(layer.weight.detach(), bits=2, group_size=16)
    torch.testing.assert_close(scale.detach(), expected_scale, atol=1e-7, rtol=0)
    torch.testing.assert_close(layer.weight_fake_quantizer(layer.weight.detach()), expected, atol=1e-6, rtol=0)


def test_the_scale_gets_a_gradient_and_a_smaller_scale_changes_the_codes():
    layer = learned_linear()
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    layer(x).pow(2).sum().backward()
    grad = layer.weight_fake_quantizer.scale.grad
    assert grad is not None and grad.abs().sum() > 0
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    before = layer.weight_fake_quantizer(layer.weight.detach())
    with torch.no_grad():
        layer.weight_fake_quantizer.scale.mul_(0.5)
    after = layer.weight_fake_quantizer(layer.weight.detach())
    # clamp(round(w / S), -2, 1) · S with half the scale: other values, still 4 levels per group
    assert not torch.equal(before, after)
    step = layer.weight_fake_quantizer.scale.detach().repeat_interleave(16, dim=1)
    assert set((after / step).round().unique().tolist()) <= {-2.0, -1.0, 0.0, 1.0}


def test_initialize_ranges_resets_the_same_parameter_from_the_current_weights():
    layer = learned_linear()
    scale = layer.weight_fake_quantizer.scale
    with torch.no_grad():
        layer.weight.mul_(3.0)
    assert initialize_ranges(nn.Sequential(layer)) == 1
    assert layer.weight_fake_quantizer.scale is scale  # an optimizer holding it keeps it
    _, expected_scale = symmetric_by_hand(layer.weight.detach(), bits=2, group_size=16)
    torch.testing.assert_close(scale.detach(), expected_scale, atol=1e-7, rtol=0)


def test_the_export_uses_the_learned_scales_and_computes_what_training_computed(random_batch):
    scheme = QuantizationScheme("int2", group_size=16, embeddings="int8")
    inputs = {k: v for k, v in random_batch.items() if k != "labels"}
    rtn = convert_student(prepare_student(tiny_bert(num_layers=2, dropout=0.0).eval(), scheme), scheme)
    model = prepare_student(tiny_bert(num_layers=2, dropout=0.0).eval(), scheme, range_learning=True)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, rtn(**inputs).logits, atol=1e-5, rtol=0)
        for module in model.modules():  # as training would: the scales move away from max|w|
            quantizer = getattr(module, "weight_fake_quantizer", None)
            if quantizer is not None and quantizer.config.range_learning:
                quantizer.scale.mul_(0.6)
        fake = model(**inputs).logits
    assert (fake - rtn(**inputs).logits).abs().max() > 1e-3
    convert_student(model, scheme)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, fake, atol=1e-5, rtol=0)
    weight = model.bert.encoder.layer[0].intermediate.dense.weight
    assert type(weight).__name__ == "IntxUnpackedToInt8Tensor"


def test_a_learned_ternary_scale_starts_at_absmean_trains_and_is_exported(random_batch):
    scheme = QuantizationScheme("ternary")
    inputs = {k: v for k, v in random_batch.items() if k != "labels"}
    model = prepare_student(tiny_bert(num_layers=2, dropout=0.0).eval(), scheme, range_learning=True)
    layer = model.bert.encoder.layer[0].intermediate.dense
    assert isinstance(layer, BitLinear) and isinstance(layer.learned_gamma, nn.Parameter)
    assert any(p is layer.learned_gamma for p in model.parameters())
    torch.testing.assert_close(layer.learned_gamma.detach(), layer.weight.detach().abs().mean())
    model(**inputs).logits.pow(2).sum().backward()
    assert layer.learned_gamma.grad is not None and layer.learned_gamma.grad.abs() > 0
    # dW_q/dγ by hand: round(W/γ) − W/γ where |W/γ| <= 1, the clamped code ±1 outside
    gamma = layer.learned_gamma.detach().clone().requires_grad_(True)
    from distill.quantization.ternary import learned_ternary

    learned_ternary(layer.weight.detach(), gamma).sum().backward()
    scaled = layer.weight.detach() / layer.learned_gamma.detach()
    by_hand = torch.where(scaled.abs() <= 1, scaled.round() - scaled, scaled.sign().clamp(-1, 1)).sum()
    torch.testing.assert_close(gamma.grad, by_hand, atol=1e-4, rtol=1e-5)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, BitLinear):
                module.learned_gamma.mul_(0.5)  # as training might
        fake = model(**inputs).logits
    convert_student(model, scheme)
    converted = model.bert.encoder.layer[0].intermediate.dense
    assert isinstance(converted, TernaryLinear) and set(converted.codes.unique().tolist()) <= {-1, 0, 1}
    torch.testing.assert_close(converted.scale, 0.5 * layer.weight.detach().abs().mean())
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, fake, atol=1e-5, rtol=0)


def test_initialize_ranges_sets_a_learned_ternary_scale_to_the_current_absmean():
    torch.manual_seed(0)
    model = prepare_student(nn.Sequential(nn.Linear(64, 8)), QuantizationScheme("ternary"), range_learning=True)
    gamma = model[0].learned_gamma
    with torch.no_grad():
        model[0].weight.mul_(2.0)
    assert initialize_ranges(model) == 1 and model[0].learned_gamma is gamma
    torch.testing.assert_close(gamma.detach(), model[0].weight.detach().abs().mean())

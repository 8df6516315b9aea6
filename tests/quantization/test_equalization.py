"""AWQ and SmoothQuant: the rescaled layer computes what the Linear did, the search scores the
rounding the conversion applies and the output error a hand computation gives, AWQ is never worse
than round-to-nearest (and better where a few inputs are large), SmoothQuant's scale is the paper's
formula and flattens the activations, and the rescaled students save and load back exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_bert

from distill.export import load_student, save_student
from distill.quantization import QuantizationScheme, convert_student
from distill.quantization.equalization import (
    AWQ_GRID,
    InputScaledLinear,
    awq_equalize,
    awq_scale,
    output_error,
    rtn_dequantized,
    smoothquant_equalize,
    smoothquant_scale,
)

INT2 = QuantizationScheme("int2", group_size=32)


def _inputs(n: int, sample: int, loud: float = 30.0) -> torch.Tensor:
    """64 features, the first 4 of them ``loud`` times larger than the rest (the outlier channels
    AWQ and SmoothQuant are about)."""
    x = torch.randn(n, 64, generator=torch.Generator().manual_seed(sample))
    x[:, :4] *= loud
    return x


def _layer(seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 16))


def test_the_rescaled_layer_computes_what_the_linear_did():
    linear = _layer()[0]
    scale = torch.rand(64) * 4 + 0.1
    scaled = InputScaledLinear.equalize(linear, scale)
    x = _inputs(8, sample=0)
    torch.testing.assert_close(scaled(x), linear(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scaled.linear.weight, linear.weight * scale)
    torch.testing.assert_close(scaled.input_scale, 1 / scale)


@pytest.mark.parametrize("scheme", [INT2, QuantizationScheme("int4", group_size=16, symmetric=False),
                                    QuantizationScheme("int8")], ids=lambda s: s.describe())
def test_the_search_rounds_as_the_conversion_does(scheme):
    model = _layer()
    converted = convert_student(copy.deepcopy(model), scheme)[0].weight.dequantize()
    assert torch.equal(rtn_dequantized(model[0].weight, scheme), converted)


def test_output_error_is_the_mean_squared_output_difference_by_hand():
    weight = _layer()[0].weight.detach()
    other = weight + 0.01 * torch.randn_like(weight)
    x = _inputs(256, sample=0)
    by_hand = (x @ weight.T - x @ other.T).square().sum() / len(x)
    assert output_error(weight, other, x.T @ x / len(x)) == pytest.approx(float(by_hand), rel=1e-4)


@pytest.mark.parametrize("scheme", [INT2, QuantizationScheme("int4", group_size=32)], ids=lambda s: s.describe())
def test_awq_is_round_to_nearest_at_alpha_zero_never_worse_and_better_with_loud_inputs(scheme):
    weight = _layer()[0].weight.detach()
    x = _inputs(512, sample=0)
    gram = x.T @ x / len(x)
    alpha, scale, errors = awq_scale(weight, x.abs().mean(0), gram, scheme)
    assert len(errors) == AWQ_GRID
    rtn = rtn_dequantized(weight, scheme)
    assert errors[0] == pytest.approx(output_error(weight, rtn, gram), rel=1e-5)  # α = 0: s = 1, plain RTN
    assert min(errors) == errors[round(alpha * AWQ_GRID)]
    # The loud channels' weights round more finely (measured: 0.96x RTN's error at int2, 0.91x at int4) ...
    assert alpha > 0 and min(errors) < errors[0]
    fresh = _inputs(512, sample=1)  # ... also on inputs the search did not see
    awq = rtn_dequantized(weight * scale, scheme) / scale
    assert output_error(weight, awq, fresh.T @ fresh / 512) < output_error(weight, rtn, fresh.T @ fresh / 512)


def test_awq_equalize_rescales_every_quantized_linear_and_keeps_the_function():
    model = _layer()
    x = _inputs(64, sample=2)
    before = model(x)
    chosen = awq_equalize(model, INT2, [{"input": chunk} for chunk in _inputs(256, sample=0).split(64)])
    assert set(chosen) == {"0"} and isinstance(model[0], InputScaledLinear)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-4)


def test_smoothquant_scale_is_the_papers_formula_and_flattens_the_activations():
    model = _layer()
    weight = model[0].weight.detach()
    calibration = _inputs(256, sample=0)
    maxima = calibration.abs().amax(0)
    scale = smoothquant_scale(weight, maxima, 0.5)
    torch.testing.assert_close(scale, maxima.sqrt() / weight.abs().amax(0).sqrt())
    flattening = smoothquant_equalize(model, QuantizationScheme("int8", activations="int8"), [{"input": calibration}])
    smoothed = calibration * model[0].input_scale
    assert smoothed.abs().amax(0).max() / smoothed.abs().amax(0).median() < 0.5 * maxima.max() / maxima.median()
    assert flattening["0"] > 2


@pytest.mark.parametrize("method", ["awq", "smoothquant"])
def test_a_rescaled_student_saves_and_loads_back_computing_the_same(method, tmp_path, random_batch):
    model = tiny_bert(num_layers=2, hidden=64, dropout=0.0).eval()
    calibration = [random_batch, {**random_batch, "input_ids": random_batch["input_ids"].flip(1)}]
    calibration = [{k: v for k, v in batch.items() if k != "labels"} for batch in calibration]
    if method == "awq":
        scheme = QuantizationScheme("int4", group_size=32, embeddings="int8")
        awq_equalize(model, scheme, calibration)
    else:
        scheme = QuantizationScheme("int8", activations="int8")
        smoothquant_equalize(model, scheme, calibration)
    convert_student(model, scheme)
    query = model.bert.encoder.layer[0].attention.self.query
    assert isinstance(query, InputScaledLinear) and type(query.linear.weight).__name__ == "IntxUnpackedToInt8Tensor"
    assert not isinstance(model.classifier, InputScaledLinear)  # excluded, as from quantization
    save_student(model, None, tmp_path / method, quantization={"format": scheme.describe(), "method": method})
    inputs = {k: v for k, v in random_batch.items() if k != "labels"}
    loaded = load_student(tmp_path / method)
    assert isinstance(loaded.bert.encoder.layer[1].output.dense, InputScaledLinear)
    assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)

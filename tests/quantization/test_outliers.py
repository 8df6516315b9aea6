"""LLM.int8()-style outlier features: found from calibration inputs, computed in float beside the
int8 part, counted, and exported."""

from __future__ import annotations

import torch
from conftest import tiny_bert
from torch import nn

from distill.export import load_student, save_student
from distill.quantization import QuantizationScheme, convert_student
from distill.quantization.formats import scheme_problems
from distill.quantization.outliers import OutlierLinear, split_outlier_features


def test_features_over_the_threshold_are_split_off_and_computed_in_float():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 4))
    x = torch.randn(8, 16)
    x[:, 3] *= 40.0  # one outlier feature, |x| far over 6
    reference = model(x)
    # nn.Sequential takes a positional input: wrapped, calibration batches are keyword batches.
    wrapper = _Keyword(model)
    counts = split_outlier_features(wrapper, ["model.0"], [{"x": x}], threshold=6.0)
    assert counts == {"model.0": 1}
    layer = wrapper.model[0]
    assert isinstance(layer, OutlierLinear) and layer.outlier_index.tolist() == [3]
    assert torch.count_nonzero(layer.main.weight[:, 3]) == 0  # the int8 part never sees feature 3
    torch.testing.assert_close(layer(x), reference)  # split, still float: the same layer
    float_state = _float_state(layer)
    convert_student(wrapper, QuantizationScheme("int8", activations="int8"))
    quantized = wrapper.model[0](x)
    # Without the split, the outlier stretches each token's int8 scale: a larger error.
    whole = _Keyword(nn.Sequential(nn.Linear(16, 4)))
    whole.model[0].load_state_dict(float_state)
    convert_student(whole, QuantizationScheme("int8", activations="int8"))
    assert (quantized - reference).abs().max() < (whole.model[0](x) - reference).abs().max() / 4


def _float_state(layer: OutlierLinear) -> dict:
    weight = layer.main.weight.detach().clone()
    weight[:, layer.outlier_index] = layer.outlier_weight
    return {"weight": weight, "bias": layer.main.bias.detach().clone()}


class _Keyword(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


def test_an_outlier_split_student_exports_and_loads_back_exactly(tmp_path, random_batch, tokenizer):
    model = tiny_bert(num_layers=2, hidden=64, dropout=0.0).eval()
    inputs = {k: v for k, v in random_batch.items() if k != "labels"}
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "classifier"]
    counts = split_outlier_features(model, names, [inputs], threshold=0.5)  # a low threshold: some split
    assert sum(counts.values()) > 0
    scheme = QuantizationScheme("int8", activations="int8", outlier_threshold=0.5)
    convert_student(model, scheme)
    save_student(model, tokenizer, tmp_path / "student", quantization={"format": scheme.describe()})
    loaded = load_student(tmp_path / "student")
    assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


def test_outliers_are_an_option_of_int8_only():
    assert scheme_problems("q", weights="int4", group_size=32, outlier_threshold=6.0) == [
        "q.outlier_threshold=6.0: an option of the int8 format (LLM.int8()); weights='int4'. "
        "Set weights=int8 or outlier_threshold=null"
    ]
    assert "a number > 0" in scheme_problems("q", weights="int8", outlier_threshold=0)[0]

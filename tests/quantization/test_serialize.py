"""The quantized export: codes packed and unpacked exactly, files that load back to the same model,
smaller on disk, and a folder transformers refuses instead of loading it wrong."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_bert

from distill.export import load_student, save_student, size_on_disk
from distill.quantization import QuantizationScheme, convert_student, prepare_student
from distill.quantization.serialize import pack_codes, unpack_codes


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_codes_round_trip_through_bit_packing(bits):
    codes = torch.randint(-(2 ** (bits - 1)), 2 ** (bits - 1), (7, 13), dtype=torch.int8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-codes.numel() * bits // 8)
    assert torch.equal(unpack_codes(packed, bits, [7, 13]), codes)


@pytest.mark.parametrize(
    "scheme",
    [
        QuantizationScheme("int8", activations="int8", embeddings="int8"),
        QuantizationScheme("int4", group_size=16, symmetric=False, embeddings="int4", embedding_group_size=16),
        QuantizationScheme("int2", group_size=16),
        QuantizationScheme("ternary", embeddings="int8"),
    ],
    ids=lambda s: s.describe(),
)
def test_a_converted_student_saves_smaller_and_loads_back_computing_the_same(scheme, tmp_path, random_batch, tokenizer):
    model = tiny_bert(num_layers=2, hidden=64, dropout=0.0).eval()
    save_student(model, tokenizer, tmp_path / "float")
    prepare_student(model, scheme)
    convert_student(model, scheme)
    save_student(model, tokenizer, tmp_path / "quantized", quantization={"format": scheme.describe()})
    inputs = {k: v for k, v in random_batch.items() if k != "labels"}
    loaded = load_student(tmp_path / "quantized")
    assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)
    assert size_on_disk(tmp_path / "quantized") < size_on_disk(tmp_path / "float")
    with pytest.raises(OSError):  # no model.safetensors: transformers cannot build it with missing weights
        type(model).from_pretrained(tmp_path / "quantized")
    float_loaded = load_student(tmp_path / "float")  # the one loader reads float students too
    assert type(float_loaded.classifier.weight) is torch.nn.Parameter

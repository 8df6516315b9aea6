"""Quantization of a student: formats, fake-quant (QAT) and conversion on torchao, BitNet ternary
weights, and the quantized export. The Lightning side is :mod:`distill.callbacks.quantization`;
formulas and papers are in docs/compression.md."""

from distill.quantization.formats import QuantizationScheme
from distill.quantization.modules import (
    convert_student,
    prepare_student,
    quantized_modules,
)

__all__ = ["QuantizationScheme", "convert_student", "prepare_student", "quantized_modules"]

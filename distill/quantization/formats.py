"""What a quantized student looks like: the weight format, its granularity, the activations.

Affine quantization (Jacob et al. 2018) stores each weight as an integer code ``q`` and rebuilds it as

    x ≈ S · (q − Z),    q = clamp(round(x / S) + Z, q_min, q_max)

with ``b``-bit codes ``q_min = −2^(b−1)``, ``q_max = 2^(b−1) − 1``. Symmetric schemes fix ``Z = 0`` and
``S = max|x| / ((q_max − q_min) / 2)``; asymmetric ones map ``[min x, max x]`` onto the full code range.
One ``(S, Z)`` pair covers a *block* of weights: a whole output row (per-channel, ``group_size:
null``) or ``group_size`` consecutive input features of a row (per-group).

``ternary`` is BitNet b1.58 (Ma et al. 2024): ``W ≈ γ · clamp(round(W / γ), −1, 1)`` with one
``γ = mean|W|`` per tensor, and the layer's input quantized to int8 per token by its absolute maximum.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import torch

#: Integer weight formats (torchao's intx, run on CPU) and BitNet's ternary weights.
INT_FORMATS = {"int8": 8, "int4": 4, "int3": 3, "int2": 2}
WEIGHT_FORMATS = [*INT_FORMATS, "ternary"]
#: ``activations``: dynamic per-token int8 (scale and zero point from each token's own range).
ACTIVATION_FORMATS = [None, "int8"]


@dataclass(frozen=True)
class QuantizationScheme:
    """A student's quantization, as the ``compress.quantize`` node gives it.

    Args:
        weights: ``int8`` / ``int4`` / ``int3`` / ``int2`` (affine, torchao) or ``ternary`` (BitNet b1.58).
        group_size: input features per scale; ``None`` = one scale per output row (per-channel).
            Must divide the width of every quantized layer. ``ternary`` takes ``None`` (per tensor).
        symmetric: ``Z = 0`` (True) or a zero point per block (False).
        activations: ``None`` (weight-only) or ``int8`` (dynamic, per token, at every quantized
            Linear's input; ``ternary`` always quantizes activations to int8 absmax per token).
        embeddings: format of the embedding tables (``None``: kept in float; an int format: weight-only,
            one scale per row, or per ``embedding_group_size`` features).
        embedding_group_size: as ``group_size``, for the embedding tables.
        exclude: ``fnmatch`` patterns of module names (in the student) left in float.
        outlier_threshold: int8 PTQ only: input features whose |activation| exceeds it on the
            calibration batches stay in float (LLM.int8(), :mod:`distill.quantization.outliers`).
    """

    weights: str = "int8"
    group_size: int | None = None
    symmetric: bool = True
    activations: str | None = None
    embeddings: str | None = None
    embedding_group_size: int | None = None
    exclude: tuple[str, ...] = field(default=("classifier", "*.classifier", "classifier.*"))
    outlier_threshold: float | None = None

    @property
    def bits(self) -> float:
        """Bits per weight code (ternary: log2(3) ≈ 1.58, stored in 2)."""
        return 1.58 if self.weights == "ternary" else float(INT_FORMATS[self.weights])

    def describe(self) -> str:
        """e.g. ``int4 g32 sym + int8 act, emb int8``."""
        text = self.weights
        if self.weights != "ternary":
            text += f" g{self.group_size}" if self.group_size else " per-channel"
            text += " sym" if self.symmetric else " asym"
        if self.activations or self.weights == "ternary":
            text += " + int8 act"
        if self.outlier_threshold is not None:
            text += f" + fp outliers >{self.outlier_threshold:g}"
        if self.embeddings:
            text += f", emb {self.embeddings}" + (f" g{self.embedding_group_size}" if self.embedding_group_size else "")
        return text

    def excluded(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.exclude)


def scheme_problems(field_name: str, **settings) -> list[str]:
    """Problems with the settings of a :class:`QuantizationScheme` (all of them, each naming its field)."""
    problems = []
    weights = settings.get("weights")
    if weights not in WEIGHT_FORMATS:
        problems.append(f"{field_name}.weights={weights!r}: unknown format; allowed: {WEIGHT_FORMATS}")
    embeddings = settings.get("embeddings")
    if embeddings is not None and embeddings not in INT_FORMATS:
        problems.append(
            f"{field_name}.embeddings={embeddings!r}: allowed: null (float) or one of {list(INT_FORMATS)}"
        )
    activations = settings.get("activations")
    if activations not in ACTIVATION_FORMATS:
        problems.append(f"{field_name}.activations={activations!r}: allowed: {ACTIVATION_FORMATS}")
    for key in ("group_size", "embedding_group_size"):
        size = settings.get(key)
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            problems.append(f"{field_name}.{key}={size!r}: a positive integer (e.g. 32, 64, 128) or null (per-channel)")
    if weights == "ternary" and settings.get("group_size") is not None:
        problems.append(
            f"{field_name}.group_size={settings['group_size']}: ternary (BitNet b1.58) uses one absmean scale "
            "per tensor; set group_size=null"
        )
    if not isinstance(settings.get("symmetric", True), bool):
        problems.append(f"{field_name}.symmetric={settings['symmetric']!r}: true or false")
    threshold = settings.get("outlier_threshold")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold <= 0:
            problems.append(f"{field_name}.outlier_threshold={threshold!r}: a number > 0 (LLM.int8() uses 6.0) or null")
        elif weights != "int8":
            problems.append(
                f"{field_name}.outlier_threshold={threshold}: an option of the int8 format (LLM.int8()); "
                f"weights={weights!r}. Set weights=int8 or outlier_threshold=null"
            )
    exclude = settings.get("exclude", ())
    if isinstance(exclude, str) or not all(isinstance(p, str) for p in exclude or ()):
        problems.append(f"{field_name}.exclude={exclude!r}: a list of module-name patterns, e.g. ['classifier']")
    return problems


def width_problems(field_name: str, scheme: QuantizationScheme, model: torch.nn.Module) -> list[str]:
    """Group sizes that do not divide a quantized layer's input width (``model`` may be on ``meta``)."""
    from distill.quantization.modules import quantized_modules

    problems = []
    for name, module in quantized_modules(model, scheme):
        is_embedding = isinstance(module, torch.nn.Embedding)
        size = scheme.embedding_group_size if is_embedding else scheme.group_size
        width = module.weight.shape[1]
        if size is not None and width % size:
            key = "embedding_group_size" if is_embedding else "group_size"
            divisors = [d for d in (16, 32, 64, 128, 256) if width % d == 0]
            problems.append(
                f"{field_name}.{key}={size}: does not divide the width {width} of {name}; "
                f"group sizes that do: {divisors or 'none of 16..256'} (or null: per-channel)"
            )
            break  # one layer is enough to name; the others share the width most of the time
    return problems

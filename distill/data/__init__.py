"""Data loading for distillation: tokenized text (pair) tasks with length-grouped batching, and
unlabelled (optionally masked) text for general distillation, and next-token text for causal LMs.

Importing this package is cheap; ``lightning``, ``datasets`` and ``transformers`` load on first
use of :class:`TextClassificationDataModule` or :class:`DataConfigError`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distill.data.causal import CausalTextDataModule
    from distill.data.datamodule import TextClassificationDataModule
    from distill.data.errors import DataConfigError
    from distill.data.masking import MaskingCollator
    from distill.data.mlm import TextCorpusDataModule
    from distill.data.sampling import LengthGroupedSampler
    from distill.data.seq2seq import Seq2SeqTextDataModule

__all__ = [
    "CausalTextDataModule",
    "DataConfigError",
    "LengthGroupedSampler",
    "MaskingCollator",
    "Seq2SeqTextDataModule",
    "TextClassificationDataModule",
    "TextCorpusDataModule",
]

_LOCATIONS = {
    "CausalTextDataModule": "distill.data.causal",
    "DataConfigError": "distill.data.errors",
    "TextClassificationDataModule": "distill.data.datamodule",
    "LengthGroupedSampler": "distill.data.sampling",
    "MaskingCollator": "distill.data.masking",
    "Seq2SeqTextDataModule": "distill.data.seq2seq",
    "TextCorpusDataModule": "distill.data.mlm",
}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

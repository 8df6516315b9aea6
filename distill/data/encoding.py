"""From raw rows to model inputs: label encoding, batched tokenization, padding collation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from distill.data.transfer import placeholder_labels, split_labels


@dataclass(frozen=True, eq=False)
class LabelEncoding:
    """How raw label values become the ``labels`` column.

    Attributes:
        kind: ``"int"`` (class ids as they are), ``"map"`` (strings via ``label_to_id``), or
            ``"float"`` (regression targets).
        label_to_id: string label -> class id, for ``"map"``.
    """

    kind: str
    label_to_id: dict[str, int] | None = None

    def __call__(self, values: list[Any]) -> np.ndarray:
        if self.kind == "map":
            assert self.label_to_id is not None
            return np.asarray([self.label_to_id[v] for v in values], dtype=np.int64)
        if self.kind == "float":
            return np.asarray([float(v) for v in values], dtype=np.float32)
        return np.asarray(values, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class TextEncoder:
    """The batched ``Dataset.map`` function: tokenizes text (pairs) and encodes labels.

    A plain picklable object (not a closure over the data module) so ``datasets`` can fingerprint
    it and reuse its cache across runs.
    """

    tokenizer: PreTrainedTokenizerBase
    text_column: str
    text_pair_column: str | None
    label_column: str
    max_length: int
    labels: LabelEncoding | None
    #: For transfer text (``labels=None``): placeholder labels of a regression task are NaN.
    regression: bool = False

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, Any]:
        pairs = batch[self.text_pair_column] if self.text_pair_column else None
        encoded = self.tokenizer(batch[self.text_column], pairs, truncation=True, max_length=self.max_length)
        keep = set(self.tokenizer.model_input_names) | {"input_ids", "attention_mask"}
        out: dict[str, Any] = {key: value for key, value in encoded.items() if key in keep}
        if self.labels is None:
            out["labels"] = placeholder_labels(len(encoded["input_ids"]), self.regression)
        else:
            out["labels"] = self.labels(batch[self.label_column])
        return out


class PaddingCollator:
    """Pads a list of examples to the longest one in the batch; returns a plain ``dict`` of tensors.

    Transfer-set rows (placeholder labels) are marked with a ``label_mask``, see
    :func:`distill.data.transfer.split_labels`.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._collator = DataCollatorWithPadding(tokenizer, padding="longest", return_tensors="pt")

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return split_labels(dict(self._collator(features)))

"""Transfer set: unlabeled text on which only the teacher-target loss terms apply.

Hinton et al. (2015), *Distilling the Knowledge in a Neural Network*, train the student on a
"transfer set" whose targets are the teacher's soft predictions; it need not be labeled. When
labels are scarce and in-domain text is plentiful, this is where distillation pays most.

Here every training batch holds ``data.batch_size`` labeled examples followed by
``round(ratio · batch_size)`` transfer examples. Transfer rows carry a placeholder label
(:data:`IGNORE_INDEX` for classes, NaN for regression targets); the collator turns the placeholders
into a ``label_mask`` and :class:`~distill.losses.LossMix` hands label terms only the labeled rows
(the one place the mask is applied), while teacher terms (soft-target KL, hidden/attention
matching) see every row.

Sources (``data.transfer.source``):

- ``train_rest``: the training split itself; the first ``data.train_limit`` examples keep their
  labels, the rest become transfer text (their labels are never read).
- ``file``: a local TSV/CSV/JSON/JSONL/Parquet file with a text column.
- ``hub``: a Hugging Face hub dataset split with a text column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

#: Placeholder class id of a transfer row (the value ``torch.nn.functional.cross_entropy`` ignores).
IGNORE_INDEX = -100
#: Allowed values of ``data.transfer.source``.
TRANSFER_SOURCES = ("train_rest", "file", "hub")


@dataclass
class TransferConfig:
    """``data.transfer``: where transfer text comes from and how much of each batch it fills.

    Attributes:
        source: ``null`` (no transfer set) or one of :data:`TRANSFER_SOURCES`.
        file: the local file, for ``source: file``.
        file_format: the file's format; ``null`` infers it from the extension.
        hub_dataset: hub dataset name, for ``source: hub``.
        hub_subset: hub config name.
        hub_split: hub split.
        text_column: column with the text; ``null`` = ``data.text_column``.
        text_pair_column: column with the second text of a pair; ``null`` = ``data.text_pair_column``.
        limit: keep only the first N transfer examples.
        ratio: transfer examples per labeled example in each training batch (``1.0``: a batch of 32
            labeled sentences carries 32 transfer sentences too).
    """

    source: str | None = None
    file: str | None = None
    file_format: str | None = None
    hub_dataset: str | None = None
    hub_subset: str | None = None
    hub_split: str = "train"
    text_column: str | None = None
    text_pair_column: str | None = None
    limit: int | None = None
    ratio: float = 1.0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> tuple[TransferConfig, list[str]]:
        """Build from the config node; returns the config and the problems found (unknown keys...)."""
        values = dict(values or {})
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        problems = []
        if unknown:
            problems.append(f"data.transfer: unknown keys {unknown}; allowed: {sorted(known)}")
        config = cls(**{key: value for key, value in values.items() if key in known})
        problems.extend(config.problems())
        return config, problems

    @property
    def enabled(self) -> bool:
        return self.source is not None

    def problems(self) -> list[str]:
        """What is wrong with these settings, each naming the field and the allowed values."""
        if not self.enabled:
            return []
        found = []
        if self.source not in TRANSFER_SOURCES:
            found.append(
                f"data.transfer.source={self.source!r} is not supported. Allowed: null (no transfer set), "
                + ", ".join(TRANSFER_SOURCES)
            )
        if self.source == "file" and not self.file:
            found.append("data.transfer.source=file needs data.transfer.file=/path/to/text.{tsv,csv,jsonl,parquet}")
        if self.source == "hub" and not self.hub_dataset:
            found.append("data.transfer.source=hub needs data.transfer.hub_dataset (e.g. wikitext)")
        if not isinstance(self.ratio, (int, float)) or isinstance(self.ratio, bool) or self.ratio <= 0:
            found.append(
                f"data.transfer.ratio={self.ratio!r} is invalid: use a number > 0 (transfer examples per "
                "labeled example in a batch)"
            )
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            found.append(f"data.transfer.limit={self.limit!r} is invalid: use an integer >= 1, or null for all")
        return found

    def per_batch(self, batch_size: int) -> int:
        """Transfer examples in a batch of ``batch_size`` labeled examples (at least 1)."""
        return max(1, round(self.ratio * batch_size))


def placeholder_labels(count: int, regression: bool) -> np.ndarray:
    """The ``labels`` column of ``count`` transfer rows (dtypes as real labels): never read, only masked out."""
    if regression:
        return np.full(count, np.nan, dtype=np.float32)
    return np.full(count, IGNORE_INDEX, dtype=np.int64)


def label_mask(labels: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: rows with a real label (not a transfer placeholder)."""
    if labels.is_floating_point():
        return ~torch.isnan(labels)
    return labels != IGNORE_INDEX


def split_labels(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mark transfer rows of a collated batch, in place.

    All rows labeled: unchanged. No row labeled: ``labels`` removed (label terms skip the batch).
    Otherwise ``label_mask`` (bool ``(B,)``) is added.
    """
    labels = batch.get("labels")
    if labels is None:
        return batch
    mask = label_mask(labels)
    if bool(mask.all()):
        return batch
    if not bool(mask.any()):
        del batch["labels"]
        return batch
    batch["label_mask"] = mask
    return batch


__all__ = [
    "IGNORE_INDEX",
    "TRANSFER_SOURCES",
    "TransferConfig",
    "label_mask",
    "placeholder_labels",
    "split_labels",
]

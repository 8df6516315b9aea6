"""What a teacher-output cache was computed from, and how to tell a run that it does not match.

A cache is valid for a run when three things are the same: the teacher's **weights** (a SHA-256
over every parameter and buffer: name, dtype, shape and bytes, so another fine-tune, another dtype
or another checkpoint of the same name is another teacher), the **tokenized examples** of each
split (a SHA-256 over the model-input columns: other data, another ``train_limit``, another
tokenizer or ``max_length`` all change it), and **what is stored** (dtype, which outputs). Names
(teacher path, data files, tokenizer, ``max_length``) are recorded beside the hashes only to say
*why* a cache does not match; the key is made of the hashes, so two spellings of one file share
one cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import torch
from torch import nn

#: Bumped when the on-disk layout changes: an older cache is then rebuilt, never misread.
CACHE_FORMAT = 1

#: Dataset columns that are bookkeeping, not model inputs (they do not change the teacher's output).
NON_INPUT_COLUMNS = ("labels", "label_mask", "example_index")


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of a model's state: every tensor's name, dtype, shape and bytes, in name order
    (0-dim tensors included: flattened first, since a byte view of a 0-dim tensor is refused)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def tokens_sha256(dataset: datasets.Dataset) -> str:
    """SHA-256 of a tokenized split's model-input columns (values and row boundaries), in row order."""
    table = dataset.with_format("arrow")[:]
    digest = hashlib.sha256()
    for name in sorted(c for c in table.column_names if c not in NON_INPUT_COLUMNS):
        column = table.column(name).combine_chunks()
        digest.update(f"{name}|{len(column)}|".encode())
        if hasattr(column, "offsets"):  # a list column: the row lengths, then the flat values
            offsets = np.asarray(column.offsets, dtype=np.int64)
            digest.update((offsets - offsets[0]).tobytes())
            digest.update(np.asarray(column.flatten(), dtype=np.int64).tobytes())
        else:
            digest.update(np.asarray(column, dtype=np.int64).tobytes())
    return digest.hexdigest()


@dataclass
class CacheIdentity:
    """What decides a cache's content (``hashes``), and names that explain a mismatch (``about``).

    Attributes:
        teacher_sha256: :func:`weights_sha256` of the teacher.
        splits: split name -> ``{"examples": n, "tokens_sha256": ...}``.
        stored: how outputs are stored: ``{"dtype": "float16", "logits": "full"}``, plus
            ``"hidden_layers": [...]`` (normalised ``hidden_states`` indices) when hidden states are
            cached (absent otherwise, so a logits-only cache keeps its key).
        about: for messages only: ``teacher`` (name_or_path, dtype), ``data`` (sources),
            ``tokenizer``, ``max_length``.
    """

    teacher_sha256: str
    splits: dict[str, dict[str, Any]]
    stored: dict[str, Any]
    about: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        """The cache folder's name: a hash of everything that decides the stored values."""
        decided = {"format": CACHE_FORMAT, "teacher": self.teacher_sha256, "splits": self.splits, "stored": self.stored}
        return hashlib.sha256(json.dumps(decided, sort_keys=True).encode()).hexdigest()[:20]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CACHE_FORMAT,
            "teacher_sha256": self.teacher_sha256,
            "splits": self.splits,
            "stored": self.stored,
            "about": self.about,
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> CacheIdentity:
        return cls(payload["teacher_sha256"], payload["splits"], payload["stored"], payload.get("about", {}))

    def mismatches(self, cached: CacheIdentity) -> list[str]:
        """Why a cache built for ``cached`` cannot serve this run (empty when it can), one reason
        per differing part, each naming the settings on both sides."""
        reasons = []
        if cached.teacher_sha256 != self.teacher_sha256:
            reasons.append(
                f"other teacher: the cache holds the outputs of {_teacher_name(cached)} (weights sha256 "
                f"{cached.teacher_sha256[:12]}), this run's teacher is {_teacher_name(self)} (weights sha256 "
                f"{self.teacher_sha256[:12]})"
            )
        for split, mine in self.splits.items():
            theirs = cached.splits.get(split)
            if theirs is None:
                reasons.append(f"missing split: the cache has no {split!r} split (it has {sorted(cached.splits)})")
            elif theirs != mine:
                reasons.append(f"other {split} data: {self._data_difference(cached, split)}")
        for setting, value in self.stored.items():
            if setting == "hidden_layers":  # a cache holding more layers serves a run that needs fewer
                reasons.extend(_missing_layers(value, cached.stored.get(setting)))
            elif cached.stored.get(setting) != value:
                reasons.append(
                    f"other storage: teacher_cache.{setting}={cached.stored.get(setting)!r} in the cache, "
                    f"{value!r} in this run"
                )
        return reasons

    def _data_difference(self, cached: CacheIdentity, split: str) -> str:
        mine, theirs = self.splits[split], cached.splits[split]
        details = []
        if mine["examples"] != theirs["examples"]:
            details.append(f"{theirs['examples']} examples in the cache, {mine['examples']} in this run")
        for name, field_name in (("max_length", "data.max_length"), ("tokenizer", "the tokenizer")):
            if cached.about.get(name) != self.about.get(name):
                details.append(f"{field_name}: {cached.about.get(name)!r} in the cache, {self.about.get(name)!r} here")
        sources = (cached.about.get("sources") or {}).get(split), (self.about.get("sources") or {}).get(split)
        if sources[0] != sources[1]:
            details.append(f"source: {sources[0]!r} in the cache, {sources[1]!r} here")
        if not details:
            details.append("the tokenized examples differ (same count, other tokens)")
        return "; ".join(details)


def _missing_layers(needed: list[int], cached: list[int] | None) -> list[str]:
    """The hidden layers this run needs (``teacher_cache.hidden_layers``) that the cache lacks."""
    missing = [layer for layer in needed if layer not in (cached or [])]
    if not missing:
        return []
    held = f"the teacher's hidden states of layers {cached}" if cached else "no hidden states"
    return [
        f"missing hidden layers: the cache holds {held}, this run needs layers {needed} "
        f"(teacher_cache.hidden_layers); layers {missing} are not in it. Fix: build the cache with "
        f"teacher_cache.hidden_layers={sorted(set(needed) | set(cached or []))}"
    ]


def _teacher_name(identity: CacheIdentity) -> str:
    teacher = identity.about.get("teacher") or {}
    return repr(teacher.get("name_or_path", "an unnamed teacher"))

"""Prompt / completion pairs for encoder-decoder distillation (``task: seq2seq_lm``, e.g. T5).

The prompt is the encoder's input; the completion (plus the end-of-text token) is the decoder's
target, ``labels``, with ``-100`` on padding. Unlike a causal LM there is no shift here: the decoder's
logits at position ``t`` predict ``labels[t]``, and the decoder's inputs (``labels`` shifted right
behind the model's start token) are made by the module from the labels, once
(:meth:`~distill.module.DistillationModule` via ``prepare_decoder_input_ids_from_labels``).
Sequence-level KD on a generation stage's output: ``data=generations_seq2seq``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from transformers import PreTrainedTokenizerBase

from distill.data.causal import CausalTextDataModule
from distill.data.masking import IGNORE_INDEX


@dataclass(frozen=True, eq=False)
class _TokenizePairs:
    """Batched ``Dataset.map`` function: prompts -> ``input_ids``; completions -> ``target_ids``."""

    tokenizer: PreTrainedTokenizerBase
    max_length: int

    def __call__(self, batch: dict[str, list[str]]) -> dict[str, Any]:
        eos = self.tokenizer.eos_token_id
        inputs = self.tokenizer(batch["text"], truncation=True, max_length=self.max_length)["input_ids"]
        targets = self.tokenizer(batch["completion"], add_special_tokens=False)["input_ids"]
        targets = [(ids + ([eos] if eos is not None else []))[: self.max_length] for ids in targets]
        return {"input_ids": inputs, "target_ids": targets}


class Seq2SeqCollator:
    """Pads prompts (``input_ids``, ``attention_mask``) and targets (``labels``, ``-100`` on padding)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad if pad is not None else 0)

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        def padded(key: str, value: int) -> torch.Tensor:
            rows = [feature[key] for feature in features]
            out = torch.full((len(rows), max(len(row) for row in rows)), value, dtype=torch.long)
            for index, row in enumerate(rows):
                out[index, : len(row)] = torch.as_tensor(row, dtype=torch.long)
            return out

        input_ids = padded("input_ids", self.pad_token_id)
        lengths = torch.tensor([len(feature["input_ids"]) for feature in features])
        attention_mask = (torch.arange(input_ids.size(1)) < lengths[:, None]).long()
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": padded("target_ids", IGNORE_INDEX)}


class Seq2SeqTextDataModule(CausalTextDataModule):
    """Prompt / completion batches for ``task: seq2seq_lm``: every source needs a ``completion_column``
    (a generation stage's folder has ``prompt`` / ``completion``). Arguments as for
    :class:`~distill.data.CausalTextDataModule` (``pack`` does not apply); ``max_length`` bounds
    prompts and targets alike."""

    def _check_arguments(self) -> list[str]:
        problems = super()._check_arguments()
        for split, sources in (("train", self.train_sources), ("eval", self.eval_sources)):
            problems.extend(
                f"data.{split}_sources[{index}]: task=seq2seq_lm needs prompt / completion pairs; set its "
                "completion_column (a generation folder: text_column: prompt, completion_column: completion)"
                for index, source in enumerate(sources)
                if source.completion_column is None
            )
        return problems

    def _scored_token_counts(self, dataset: datasets.Dataset) -> torch.Tensor:
        counts = torch.zeros(len(self.tokenizer), dtype=torch.long)
        for ids in dataset["target_ids"]:
            counts += torch.bincount(torch.as_tensor(ids, dtype=torch.long), minlength=len(self.tokenizer))
        return counts

    def _tokenize(self, split: str, parts: list[datasets.Dataset], limit: int | None) -> datasets.Dataset:
        text = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        tokenized = text.map(_TokenizePairs(self.tokenizer, self.max_length), batched=True,
                             remove_columns=text.column_names, desc=f"Tokenizing {split} pairs")
        if limit is not None and limit < len(tokenized):
            tokenized = tokenized.select(range(limit))
        return tokenized

    def collator(self, fixed_masks: bool = True) -> Seq2SeqCollator:
        self.prepare()
        return Seq2SeqCollator(self.tokenizer)


__all__ = ["Seq2SeqCollator", "Seq2SeqTextDataModule"]

"""Text for causal-LM distillation (``task: causal_lm``): blocks of a token stream, or prompt /
completion pairs whose prompts the loss does not score.

Every example becomes ``input_ids`` and ``labels``; a label is the token itself (``labels ==
input_ids``) except where it must not count: padding and prompt tokens get ``-100``. The
next-token shift (logits at position ``t`` predict the label at ``t + 1``) is *not* done here: it
is done once, in :meth:`distill.losses.LossInputs.for_next_tokens`, for every loss and metric.

- Plain text (``pack: true``, the default): the texts of a split are joined, each followed by the
  tokenizer's end-of-text token, and the stream is cut into blocks of ``max_length`` tokens (the
  last, shorter block kept): no padding, no text lost to truncation (GPT-2's recipe).
- Plain text, ``pack: false``: one example per text, truncated to ``max_length``, padded per batch.
- Prompt / completion (a source with ``completion_column``, e.g. a generation stage's output for
  sequence-level KD): ``prompt + completion + eos``, truncated to ``max_length`` from the end of the
  completion; the prompt's labels are ``-100``, so only the completion is learnt.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader, SequentialSampler
from transformers import PreTrainedTokenizerBase

from distill.data.datamodule import with_example_index
from distill.data.masking import IGNORE_INDEX
from distill.data.mlm import TextCorpusDataModule

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class _TokenizeCausal:
    """Batched ``Dataset.map`` function: texts (and completions) -> ``input_ids``, ``prompt_length``."""

    tokenizer: PreTrainedTokenizerBase
    max_length: int
    pack: bool

    def __call__(self, batch: dict[str, list[str]]) -> dict[str, Any]:
        eos = self.tokenizer.eos_token_id
        if "completion" in batch:
            prompts = self.tokenizer(batch["text"])["input_ids"]
            completions = self.tokenizer(batch["completion"], add_special_tokens=False)["input_ids"]
            ids = [(prompt + completion + ([eos] if eos is not None else []))[: self.max_length]
                   for prompt, completion in zip(prompts, completions)]
            return {"input_ids": ids, "prompt_length": [min(len(prompt), self.max_length) for prompt in prompts]}
        if self.pack:  # the raw stream, end-of-text between texts; cut into blocks later
            ids = self.tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
            return {"input_ids": [text + ([eos] if eos is not None else []) for text in ids]}
        ids = self.tokenizer(batch["text"], truncation=True, max_length=self.max_length)["input_ids"]
        return {"input_ids": ids}


class CausalLMCollator:
    """Pads a list of examples (right padding) and builds the labels: ``input_ids`` with ``-100`` on
    padding and on each example's first ``prompt_length`` tokens."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad if pad is not None else 0)

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(feature["input_ids"]) for feature in features]
        input_ids = torch.full((len(features), max(lengths)), self.pad_token_id, dtype=torch.long)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        attention_mask = torch.zeros_like(input_ids)
        for row, (feature, length) in enumerate(zip(features, lengths)):
            ids = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            input_ids[row, :length] = ids
            attention_mask[row, :length] = 1
            start = int(feature.get("prompt_length", 0))
            labels[row, start:length] = ids[start:]
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if "example_index" in features[0]:
            batch["example_index"] = torch.as_tensor([feature["example_index"] for feature in features])
        return batch


class CausalTextDataModule(TextCorpusDataModule):
    """Text batches for ``task: causal_lm``: ``input_ids``, ``attention_mask`` and ``labels`` (see the
    module docstring for packing and prompt masking). Sources as for
    :class:`~distill.data.TextCorpusDataModule`, plus ``completion_column`` for prompt / completion
    data and a generation stage's folder as a ``file``.

    Args:
        tokenizer: the tokenizer teacher and student share.
        train_sources / eval_sources: lists of source mappings (``file`` or ``hub_dataset``,
            ``text_column``, ``completion_column``, ``limit``...).
        max_length: tokens per example (block length when packing).
        pack: cut plain text into ``max_length`` blocks of the joined stream (``False``: one
            truncated example per text). Prompt / completion sources are never packed.
        batch_size / eval_batch_size, train_limit / eval_limit (examples, after packing),
        group_by_length, shuffle, seed, num_workers: as for the other text data modules.

    After :meth:`prepare`, :attr:`token_counts` holds how often each token id occurs among the
    scored training tokens (the evaluation's rare / frequent deciles use it).
    """

    accepts_completions = True

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        train_sources: Sequence[Mapping[str, Any]] | None = None,
        eval_sources: Sequence[Mapping[str, Any]] | None = None,
        max_length: int = 128,
        pack: bool = True,
        batch_size: int = 8,
        eval_batch_size: int = 8,
        train_limit: int | None = None,
        eval_limit: int | None = None,
        group_by_length: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(
            tokenizer, train_sources=train_sources, eval_sources=eval_sources, max_length=max_length, pack=pack,
            mlm_probability=0.0, mlm_smoothing=0.0, batch_size=batch_size, eval_batch_size=eval_batch_size,
            train_limit=train_limit, eval_limit=eval_limit, group_by_length=group_by_length, shuffle=shuffle,
            seed=seed, num_workers=num_workers,
        )
        self.token_counts: torch.Tensor | None = None

    def _check_arguments(self) -> list[str]:
        problems = super()._check_arguments()
        if self.tokenizer is not None and self.tokenizer.eos_token_id is None and self.tokenizer.pad_token_id is None:
            problems.append(
                "the tokenizer has neither an end-of-text (eos) nor a padding token, which causal-LM "
                "batches need; use the model's own tokenizer (teacher.tokenizer / student.tokenizer)"
            )
        return problems

    def _build(self) -> None:
        # example_index: the row a teacher-output cache holds for the example (never a model input).
        self.train_dataset = with_example_index(self._tokenize("train", self._texts["train"], self.train_limit))
        self.eval_dataset = with_example_index(self._tokenize("eval", self._texts["eval"], self.eval_limit))
        self._texts = {"train": [], "eval": []}
        self.train_lengths = [len(ids) for ids in self.train_dataset["input_ids"]]
        self.token_counts = self._scored_token_counts(self.train_dataset)
        eval_tokens = sum(len(ids) for ids in self.eval_dataset["input_ids"])
        for split, dataset, tokens in (("train", self.train_dataset, sum(self.train_lengths)),
                                       ("eval", self.eval_dataset, eval_tokens)):
            log.info("%s text: %d examples, %d tokens, from %s", split, len(dataset), tokens,
                     "; ".join(self.data_sources[split]))

    def _scored_token_counts(self, dataset: datasets.Dataset) -> torch.Tensor:
        starts = dataset["prompt_length"] if "prompt_length" in dataset.column_names else [0] * len(dataset)
        scored = [np.asarray(ids[start:], dtype=np.int64) for ids, start in zip(dataset["input_ids"], starts)]
        counts = np.bincount(np.concatenate(scored) if scored else np.zeros(0, np.int64), minlength=len(self.tokenizer))
        return torch.as_tensor(counts)

    def _tokenize(self, split: str, parts: list[datasets.Dataset], limit: int | None) -> datasets.Dataset:
        with_completions = [part for part in parts if "completion" in part.column_names]
        if with_completions and len(with_completions) != len(parts):
            raise ValueError(
                f"data.{split}_sources mix prompt / completion sources with plain text; give every source of "
                "a split a completion_column, or none"
            )
        text = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        encoder = _TokenizeCausal(self.tokenizer, self.max_length, pack=self.pack and not with_completions)
        tokenized = text.map(encoder, batched=True, remove_columns=text.column_names, desc=f"Tokenizing {split} text")
        if encoder.pack:
            tokenized = datasets.Dataset.from_dict({"input_ids": self._blocks(tokenized["input_ids"])})
        elif not with_completions:
            self._report_truncation(split, [len(ids) for ids in tokenized["input_ids"]])
        if limit is not None and limit < len(tokenized):
            tokenized = tokenized.select(range(limit))
        return tokenized

    def _blocks(self, texts: list[list[int]]) -> list[list[int]]:
        """The joined stream cut into ``max_length`` blocks (the last one shorter)."""
        stream = [token for ids in texts for token in ids]
        return [stream[start : start + self.max_length] for start in range(0, len(stream), self.max_length)]

    def teacher_cache_splits(self) -> dict[str, tuple[datasets.Dataset, list[int]]]:
        """What a teacher-output cache covers: the training text (the eval text is small; validation
        runs the teacher itself), with its token counts."""
        self.prepare()
        return {"train": (self.train_dataset, self.train_lengths)}

    def collator(self, fixed_masks: bool = True) -> CausalLMCollator:
        self.prepare()
        return CausalLMCollator(self.tokenizer)

    def train_dataloader(self, seed: int | None = None) -> DataLoader:
        self.prepare()
        sampler = self._train_sampler(self.train_dataset, self.seed if seed is None else seed)
        return self._loader(self.train_dataset, self.batch_size, sampler, self.collator())

    def val_dataloader(self) -> DataLoader:
        self.prepare()
        return self._loader(self.eval_dataset, self.eval_batch_size, SequentialSampler(self.eval_dataset), self.collator())


__all__ = ["CausalLMCollator", "CausalTextDataModule"]

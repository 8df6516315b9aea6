"""Unlabelled text for general (pre-training) distillation, batched with DistilBERT's token masking.

:class:`TextCorpusDataModule` reads text from one or more sources (local files: WikiText
``.tokens``/``.txt`` lines, a column of a TSV/CSV/JSON/Parquet file, or a hub dataset split),
drops blank lines, tokenizes with truncation (or packs the token stream into fixed-length blocks)
and batches it with :class:`MaskingCollator`.

The masking itself (DistilBERT's rates and frequency smoothing) lives in :mod:`distill.data.masking`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader, SequentialSampler
from transformers import PreTrainedTokenizerBase

from distill.data.batching import BatchedTextDataModule, is_int
from distill.data.masking import IGNORE_INDEX, MaskingCollator, mask_tokens, selection_probabilities, token_weights
from distill.data.sources import FILE_FORMATS, format_list, non_blank_texts, read_text_source

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- sources


@dataclass
class TextSource:
    """One source of text: a local ``file`` or a hub dataset split, and the column holding the text.

    Attributes:
        file: local file; its format from ``file_format`` or the extension (``.tokens``/``.txt``:
            one text per line, column ``text``).
        text_column: the column with the text (``text`` for plain-text files).
        file_format: one of :data:`~distill.data.sources.FILE_FORMATS`, or ``None`` (from the extension).
        hub_dataset: hub dataset name, instead of ``file`` (e.g. ``wikitext``).
        hub_subset: its config (e.g. ``wikitext-103-raw-v1``).
        split: the hub split.
        limit: keep the first N non-blank texts.
        completion_column: causal-LM data only: the column with each example's completion; then
            ``text_column`` holds the prompt, which the loss does not score (prompt / completion
            data, e.g. a generation stage's output: ``text_column: prompt``).
    """

    file: str | None = None
    text_column: str = "text"
    file_format: str | None = None
    hub_dataset: str | None = None
    hub_subset: str | None = None
    split: str = "train"
    limit: int | None = None
    completion_column: str | None = None

    @classmethod
    def parse(cls, value: Any, field: str) -> tuple[TextSource | None, list[str]]:
        allowed = [f.name for f in fields(cls)]
        if not isinstance(value, Mapping):
            return None, [f"{field}={value!r} must be a mapping with keys {allowed}, e.g. {{file: wiki.test.tokens}}"]
        unknown = sorted(str(key) for key in value if key not in allowed)
        if unknown:
            return None, [f"{field}: unknown keys {unknown}; allowed: {allowed}"]
        source = cls(**dict(value))
        problems = []
        if (source.file is None) == (source.hub_dataset is None):
            problems.append(
                f"{field}: set exactly one of file or hub_dataset"
                + (" (the data configs name their files under paths.data_dir, i.e. DISTILL_DATA_DIR: is it set?)"
                   if source.file is None else "")
            )
        if source.file_format is not None and str(source.file_format).lower() not in FILE_FORMATS:
            problems.append(
                f"{field}.file_format={source.file_format!r} is not supported; allowed: {list(FILE_FORMATS)} "
                "or null (from the extension)"
            )
        if source.limit is not None and (not isinstance(source.limit, int) or source.limit < 1):
            problems.append(f"{field}.limit={source.limit!r}: use an integer >= 1, or null for all")
        if not isinstance(source.text_column, str) or not source.text_column:
            problems.append(f"{field}.text_column={source.text_column!r}: name the column with the text")
        return source, problems


def load_text_source(source: TextSource, field: str, problems: list[str]) -> tuple[datasets.Dataset, str] | None:
    """The non-blank texts of ``source`` (column ``text``, and ``completion`` when the source has a
    ``completion_column``), at most ``source.limit``, and where they came from; ``None`` with the
    problem (naming ``field``'s keys) recorded."""
    read = read_text_source(
        field, problems, file=source.file, file_format=source.file_format, hub_dataset=source.hub_dataset,
        hub_subset=source.hub_subset, hub_split=source.split, hub_split_key="split",
    )
    if read is None:
        return None
    dataset, name = read
    if source.text_column not in dataset.column_names:
        problems.append(
            f"{field}.text_column={source.text_column!r} is not a column of the {name}. Available columns: "
            f"{format_list(dataset.column_names)}. Fix: set {field}.text_column."
        )
        return None
    column, completion = source.text_column, source.completion_column
    if completion is not None and completion not in dataset.column_names:
        problems.append(
            f"{field}.completion_column={completion!r} is not a column of the {name}. Available columns: "
            f"{format_list(dataset.column_names)}. Fix: set {field}.completion_column (or null: plain text)."
        )
        return None
    renames = {column: "text"} if completion is None else {column: "text", completion: "completion"}
    dataset = dataset.select_columns(list(renames))
    dataset = dataset.rename_columns({old: new for old, new in renames.items() if old != new})
    for kept in renames.values():  # TSV gives large_string: one type to concatenate
        if dataset.features[kept] != datasets.Value("string"):
            dataset = dataset.cast_column(kept, datasets.Value("string"))
    dataset = non_blank_texts(dataset, "text", source.limit, problems, field=field, where=name)
    if dataset is None:
        return None
    return dataset, f"{name} [{column if completion is None else f'{column} -> {completion}'}]"


def _parse_sources(values: Any, field: str) -> tuple[list[TextSource], list[str]]:
    if values is None or isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence) or not values:
        return [], [f"data.{field} must be a non-empty list of sources, e.g. [{{file: wiki.test.tokens}}]; got {values!r}"]
    sources, problems = [], []
    for index, value in enumerate(values):
        source, found = TextSource.parse(value, f"data.{field}[{index}]")
        problems.extend(found)
        if source is not None:
            sources.append(source)
    return sources, problems


# ---------------------------------------------------------------------------------- data module


@dataclass(frozen=True, eq=False)
class _Tokenize:
    """Batched ``Dataset.map`` function: text -> token ids (picklable, so ``datasets`` caches it)."""

    tokenizer: PreTrainedTokenizerBase
    max_length: int
    special_tokens: bool = True

    def __call__(self, batch: dict[str, list[str]]) -> dict[str, Any]:
        if self.special_tokens:
            encoded = self.tokenizer(batch["text"], truncation=True, max_length=self.max_length)
        else:  # packing: the raw stream, cut into blocks later
            encoded = self.tokenizer(batch["text"], add_special_tokens=False)
        return {"input_ids": encoded["input_ids"]}


class TextCorpusDataModule(BatchedTextDataModule):
    """Unlabelled text batches, masked for masked-LM distillation or plain for hidden-state matching.

    Field names in errors carry the ``data.`` prefix. Call :meth:`prepare` to fail fast.

    Args:
        tokenizer: the student's (and teacher's) tokenizer.
        train_sources: list of :class:`TextSource` mappings, concatenated in order.
        eval_sources: list of :class:`TextSource` mappings for evaluation.
        max_length: tokens per example, special tokens included (longer texts are truncated).
        pack: concatenate the texts (``[SEP]`` between them) and cut the stream into blocks of
            ``max_length`` tokens (no padding, no truncation loss); ``False``: one example per text.
        mlm_probability: expected share of tokens selected for prediction; 0 = no masking (no labels).
        mask_token_rate: share of the selected tokens replaced by ``[MASK]``.
        random_token_rate: share replaced by a random token (the rest is kept unchanged).
        mlm_smoothing: selection weight ``count^-mlm_smoothing`` (token counts of the training text);
            0 = uniform selection.
        token_type_ids: feed ``token_type_ids`` (all zeros) to the models; ``False`` (default)
            drops them, as DistilBERT does.
        batch_size / eval_batch_size: examples per batch.
        train_limit / eval_limit: keep the first N examples (after the per-source limits).
        group_by_length: batch training examples of similar length (less padding).
        shuffle: shuffle the training examples.
        seed: seed of the order and of the masks.
        num_workers: ``DataLoader`` workers.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        train_sources: Sequence[Mapping[str, Any]] | None = None,
        eval_sources: Sequence[Mapping[str, Any]] | None = None,
        max_length: int = 128,
        pack: bool = False,
        mlm_probability: float = 0.15,
        mask_token_rate: float = 0.8,
        random_token_rate: float = 0.1,
        mlm_smoothing: float = 0.7,
        token_type_ids: bool = False,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        train_limit: int | None = None,
        eval_limit: int | None = None,
        group_by_length: bool = True,
        shuffle: bool = True,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(
            tokenizer,
            max_length=max_length,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            train_limit=train_limit,
            eval_limit=eval_limit,
            group_by_length=group_by_length,
            shuffle=shuffle,
            seed=seed,
            num_workers=num_workers,
        )
        self.train_sources, train_problems = _parse_sources(train_sources, "train_sources")
        self.eval_sources, eval_problems = _parse_sources(eval_sources, "eval_sources")
        self._argument_problems = train_problems + eval_problems
        self.pack = bool(pack)
        self.mlm_probability = mlm_probability
        self.mask_token_rate = mask_token_rate
        self.random_token_rate = random_token_rate
        self.mlm_smoothing = mlm_smoothing
        self.token_type_ids = bool(token_type_ids)
        #: No classes: :func:`distill.train.build_run` reads this for classification heads only.
        self.label_names = None
        self.train_dataset: datasets.Dataset | None = None
        self.eval_dataset: datasets.Dataset | None = None
        self.weights: torch.Tensor | None = None
        self.data_sources: dict[str, list[str]] = {"train": [], "eval": []}
        self._texts: dict[str, list[datasets.Dataset]] = {"train": [], "eval": []}  # read by check()

    # ------------------------------------------------------------------ preparation

    #: Whether sources may have a ``completion_column`` (prompt / completion data: causal LM only).
    accepts_completions = False

    def _check_arguments(self) -> list[str]:
        problems = list(self._argument_problems) + self._batching_problems()
        if not self.accepts_completions:
            for split, sources in (("train", self.train_sources), ("eval", self.eval_sources)):
                problems.extend(
                    f"data.{split}_sources[{index}].completion_column={source.completion_column!r}: prompt / "
                    "completion data is for task=causal_lm (distill.data.CausalTextDataModule); remove it here"
                    for index, source in enumerate(sources)
                    if source.completion_column is not None
                )
        if is_int(self.max_length) and 1 <= self.max_length < 3:
            problems.append(f"data.max_length={self.max_length}: too short for [CLS] text [SEP]; use >= 3")
        for name in ("mlm_probability", "mask_token_rate", "random_token_rate"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                problems.append(f"data.{name}={value!r}: must be a number in [0, 1]")
        if isinstance(self.mask_token_rate, (int, float)) and isinstance(self.random_token_rate, (int, float)):
            if self.mask_token_rate + self.random_token_rate > 1:
                problems.append(
                    f"data.mask_token_rate + data.random_token_rate = {self.mask_token_rate + self.random_token_rate} "
                    "> 1; they split the selected tokens (the rest is kept), e.g. 0.8 and 0.1"
                )
        if not isinstance(self.mlm_smoothing, (int, float)) or self.mlm_smoothing < 0:
            problems.append(f"data.mlm_smoothing={self.mlm_smoothing!r}: must be >= 0 (DistilBERT: 0.7; 0 = uniform)")
        if self.mlm_probability and self.tokenizer is not None and getattr(self.tokenizer, "mask_token_id", None) is None:
            problems.append("data.mlm_probability > 0 needs a tokenizer with a mask token; set data.mlm_probability=0")
        return problems

    def _read_and_check(self) -> list[str]:
        """Reads every source of both splits and checks it; keeps the texts for :meth:`_build`."""
        problems = self._check_arguments()
        if not problems:
            for split, sources in (("train", self.train_sources), ("eval", self.eval_sources)):
                for index, source in enumerate(sources):
                    dataset = self._load_source(source, f"data.{split}_sources[{index}]", split, problems)
                    if dataset is not None:
                        self._texts[split].append(dataset)
        return problems

    def _build(self) -> None:
        """Tokenizes both splits and counts tokens for the masking's frequency smoothing."""
        self.train_dataset = self._tokenize("train", self._texts["train"], self.train_limit)
        self.eval_dataset = self._tokenize("eval", self._texts["eval"], self.eval_limit)
        self._texts = {"train": [], "eval": []}
        self.train_lengths = [len(ids) for ids in self.train_dataset["input_ids"]]
        counts = np.bincount(
            np.concatenate([np.asarray(ids, dtype=np.int64) for ids in self.train_dataset["input_ids"]]),
            minlength=len(self.tokenizer),
        )
        self.weights = token_weights(torch.as_tensor(counts), float(self.mlm_smoothing), self.tokenizer.all_special_ids)
        for split, dataset in (("train", self.train_dataset), ("eval", self.eval_dataset)):
            log.info("%s text: %d examples from %s", split, len(dataset), "; ".join(self.data_sources[split]))

    def _load_source(self, source: TextSource, field: str, split: str, problems: list[str]) -> datasets.Dataset | None:
        loaded = load_text_source(source, field, problems)
        if loaded is None:
            return None
        dataset, where = loaded
        self.data_sources[split].append(f"{where}: {len(dataset)} texts")
        return dataset

    def _tokenize(self, split: str, parts: list[datasets.Dataset], limit: int | None) -> datasets.Dataset:
        text = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        encoder = _Tokenize(self.tokenizer, self.max_length, special_tokens=not self.pack)
        tokenized = text.map(encoder, batched=True, remove_columns=["text"], desc=f"Tokenizing {split} text")
        if self.pack:
            tokenized = datasets.Dataset.from_dict({"input_ids": self._blocks(tokenized["input_ids"])})
        if limit is not None and limit < len(tokenized):
            tokenized = tokenized.select(range(limit))
        return tokenized

    def _blocks(self, texts: list[list[int]]) -> list[list[int]]:
        """``[CLS] tokens [SEP]`` blocks of ``max_length`` cut from the texts joined by ``[SEP]``."""
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        stream: list[int] = []
        for ids in texts:
            stream.extend(ids)
            stream.append(sep_id)
        size = self.max_length - 2
        return [[cls_id, *stream[start : start + size], sep_id] for start in range(0, len(stream), size)]

    # ------------------------------------------------------------------ loaders

    def collator(self, fixed_masks: bool) -> MaskingCollator:
        self.prepare()
        return MaskingCollator(
            self.tokenizer,
            self.weights,
            mlm_probability=float(self.mlm_probability),
            mask_token_rate=float(self.mask_token_rate),
            random_token_rate=float(self.random_token_rate),
            seed=int(self.seed),
            fixed_masks=fixed_masks,
            token_type_ids=self.token_type_ids,
        )

    def train_dataloader(self, seed: int | None = None) -> DataLoader:
        self.prepare()
        sampler = self._train_sampler(self.train_dataset, self.seed if seed is None else seed)
        collator = self.collator(fixed_masks=False)
        # Masked in the main process per (seed, epoch, rank, batch): exact on resume (distill.data.resumable).
        return self._loader(self.train_dataset, self.batch_size, sampler, collator.pad, batch_transform=collator.mask)

    def val_dataloader(self) -> DataLoader:
        self.prepare()
        return self._loader(
            self.eval_dataset, self.eval_batch_size, SequentialSampler(self.eval_dataset), self.collator(fixed_masks=True)
        )

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


__all__ = [
    "IGNORE_INDEX",
    "MaskingCollator",
    "TextCorpusDataModule",
    "TextSource",
    "load_text_source",
    "mask_tokens",
    "selection_probabilities",
    "token_weights",
]

"""Lightning data module for single-sentence and sentence-pair classification or regression.

One config serves a local file (GLUE TSV, CSV, JSON lines, Parquet) or, when no file is configured,
the same task on the Hugging Face hub; a configured file that does not exist is an error, never a
silent switch to the hub. :meth:`TextClassificationDataModule.check`
loads both splits and checks the config against what the data really holds; ``prepare`` then
tokenizes. Every
problem it finds is reported at once in a :class:`DataConfigError`, each naming the config field,
the bad value, what the data allows, and how to fix it.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import pyarrow.compute as pc
from torch.utils.data import DataLoader, Sampler, SequentialSampler
from transformers import PreTrainedTokenizerBase

from distill.data.batching import BatchedTextDataModule, is_int
from distill.data.encoding import LabelEncoding, PaddingCollator, TextEncoder
from distill.data.errors import DataConfigError
from distill.data.label_checks import check_split_columns, label_names_problems
from distill.data.sampling import TransferMixSampler
from distill.data.sources import FILE_FORMATS, format_list, infer_file_format, load_data_file
from distill.data.split_sources import SplitSources
from distill.data.transfer import TransferConfig

log = logging.getLogger(__name__)

_SPLITS = ("train", "eval")


def _str_list(field: str, values: Sequence[Any] | None) -> list[str] | None:
    """A config list (Hydra passes ``ListConfig``) as a plain ``list[str]``."""
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise DataConfigError([f"data.{field}={values!r} must be a list of strings, e.g. data.{field}=[a,b], or null."])
    return [str(v) for v in values]


class TextClassificationDataModule(SplitSources, BatchedTextDataModule):
    """Tokenized text (pair) classification / regression data with dynamic padding.

    Built by Hydra (``_target_``) from plain keyword arguments plus a ``tokenizer``. Call
    :meth:`prepare` before ``trainer.fit`` to fail fast on config mistakes; :meth:`setup` calls it
    too if needed. Field names in error messages use the ``data.`` config prefix.

    Args:
        tokenizer: the tokenizer of the student (and teacher, which must share its vocabulary).
        train_file: local training file; relative paths resolve against the working directory.
        eval_file: local evaluation file.
        hub_dataset: Hugging Face hub dataset (e.g. ``"glue"``) used for a split whose file is
            unset (``None``). A set file that does not exist is an error naming the path tried.
        hub_subset: hub config name (e.g. ``"sst2"``).
        hub_train_split: hub split used for training.
        hub_eval_split: hub split used for evaluation.
        file_format: one of :data:`FILE_FORMATS`; ``None`` infers it from each file's extension.
        column_names: column names for CSV/TSV files without a header row (e.g. CoLA). Not
            allowed for JSON/Parquet files; ignored for hub data.
        text_column: column with the (first) text.
        text_pair_column: column with the second text of a pair, or ``None``.
        label_column: column with the labels.
        label_names: class names; string labels map to their index here. With integer labels
            they only name the classes. For hub data with a ``ClassLabel`` column they default
            to its names.
        num_labels: number of classes; ``1`` means regression (float targets, no range check).
        max_length: truncate tokenized examples to this many tokens.
        batch_size: training batch size (per rank under DDP).
        eval_batch_size: evaluation batch size.
        train_limit: keep only the first N training examples (before tokenizing).
        eval_limit: keep only the first N evaluation examples (before tokenizing).
        group_by_length: batch training examples of similar length (see
            :class:`~distill.data.LengthGroupedSampler`). Only applies when ``shuffle`` is true.
        shuffle: shuffle training data; ``False`` keeps file order. Under DDP every training order
            shards itself in whole batches: step ``k``'s global batch is batch ``k`` of one process
            at ``batch_size × world_size`` (see :mod:`distill.data.sampling`).
        seed: seed of the training order.
        num_workers: ``DataLoader`` worker processes.
        transfer: unlabeled text for the teacher-target terms only (``data.transfer``, see
            :class:`~distill.data.transfer.TransferConfig`); ``None`` or ``source: null`` = none.

    Attributes:
        train_dataset: tokenized training set (``None`` before :meth:`prepare`).
        eval_dataset: tokenized evaluation set (``None`` before :meth:`prepare`).
        train_lengths: token count of each training example, in dataset order.
        eval_lengths: token count of each evaluation example.
        transfer_dataset: tokenized transfer text with placeholder labels (``None`` without one).
        transfer_lengths: token count of each transfer example.
        data_sources: where each split came from (``{"train": "file /abs/path", ...}``).
        is_regression: ``num_labels == 1``.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        train_file: str | os.PathLike[str] | None = None,
        eval_file: str | os.PathLike[str] | None = None,
        hub_dataset: str | None = None,
        hub_subset: str | None = None,
        hub_train_split: str = "train",
        hub_eval_split: str = "validation",
        file_format: str | None = None,
        column_names: Sequence[str] | None = None,
        text_column: str = "sentence",
        text_pair_column: str | None = None,
        label_column: str = "label",
        label_names: Sequence[str] | None = None,
        num_labels: int = 2,
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        train_limit: int | None = None,
        eval_limit: int | None = None,
        group_by_length: bool = True,
        shuffle: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        transfer: Mapping[str, Any] | None = None,
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
        self.train_file = None if train_file is None else str(train_file)
        self.eval_file = None if eval_file is None else str(eval_file)
        self.hub_dataset = hub_dataset
        self.hub_subset = hub_subset
        self.hub_train_split = hub_train_split
        self.hub_eval_split = hub_eval_split
        self.file_format = None if file_format is None else str(file_format).lower()
        self.column_names = _str_list("column_names", column_names)
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.label_column = label_column
        self.label_names = _str_list("label_names", label_names)
        self.num_labels = num_labels
        self.transfer, self._transfer_problems = TransferConfig.from_mapping(transfer)

        self.train_dataset: datasets.Dataset | None = None
        self.eval_dataset: datasets.Dataset | None = None
        self.eval_lengths: list[int] = []
        self.transfer_dataset: datasets.Dataset | None = None
        self.transfer_lengths: list[int] = []
        self._mixed_train: datasets.Dataset | None = None
        self.data_sources: dict[str, str] = {}
        self._file_formats: dict[str, str] = {}
        # What check() read, kept for tokenizing: raw splits, their label encodings, transfer text.
        self._raw: dict[str, datasets.Dataset] = {}
        self._encodings: dict[str, LabelEncoding | None] = {}
        self._transfer_raw: datasets.Dataset | None = None

    @property
    def is_regression(self) -> bool:
        """Whether the task is regression (``num_labels == 1``)."""
        return self.num_labels == 1

    # ------------------------------------------------------------------ preparation

    def _read_and_check(self) -> list[str]:
        """Loads both splits (and the transfer text) and checks them; keeps what it read for :meth:`_build`."""
        problems = self._check_arguments()
        full_train = None
        for split in _SPLITS:
            dataset = self._load_split(split, problems)
            if dataset is not None:
                full_train = dataset if split == "train" else full_train
                self._raw[split] = self._apply_limit(split, dataset)
        self._encodings = {split: self._check_split(split, dataset, problems) for split, dataset in self._raw.items()}
        self._transfer_raw = self._load_transfer(full_train, problems) if self.transfer.enabled else None
        return problems

    def _build(self) -> None:
        """Tokenizes what :meth:`_read_and_check` read (and found valid)."""
        tokenized = {split: self._tokenize(split, self._raw[split], self._encodings[split]) for split in _SPLITS}
        self.train_dataset = with_example_index(tokenized["train"])
        self.eval_dataset = with_example_index(tokenized["eval"])
        self.train_lengths = self._lengths(self.train_dataset)
        self.eval_lengths = self._lengths(self.eval_dataset)
        self._report_truncation("train", self.train_lengths)
        if self._transfer_raw is not None:
            transfer = self._tokenize("transfer", self._transfer_raw, None)
            # Numbered after the labeled examples: example_index is the row of the mixed set.
            transfer = with_example_index(transfer, start=len(self.train_dataset))
            self.transfer_dataset = transfer.cast(self.train_dataset.features)
            self.transfer_lengths = self._lengths(self.transfer_dataset)
            self._mixed_train = datasets.concatenate_datasets([self.train_dataset, self.transfer_dataset])
        self._raw, self._transfer_raw = {}, None  # the tokenized sets replace them
        for split in (*_SPLITS, "transfer") if self.transfer_dataset is not None else _SPLITS:
            count = len(self.transfer_dataset if split == "transfer" else tokenized[split])
            log.info("%s split: %d examples from %s", split, count, self.data_sources[split])

    def _check_arguments(self) -> list[str]:
        """Problems with the arguments themselves, before looking at any data."""
        problems: list[str] = []
        if self.tokenizer is None or not callable(self.tokenizer):
            problems.append(
                f"tokenizer: got {self.tokenizer!r}, expected a Hugging Face tokenizer. "
                "Fix: pass tokenizer=... when instantiating the data module."
            )
        for name in ("text_column", "label_column"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                problems.append(f"data.{name}={getattr(self, name)!r} is invalid: name a column of the data.")
        if not is_int(self.num_labels) or self.num_labels < 1:
            problems.append(
                f"data.num_labels={self.num_labels!r} is invalid: use an integer >= 2 for "
                "classification (the number of classes) or 1 for regression."
            )
        problems.extend(self._batching_problems())
        if self.file_format is not None and self.file_format not in FILE_FORMATS:
            problems.append(
                f"data.file_format={self.file_format!r} is not supported. Allowed: "
                f"{format_list(FILE_FORMATS)}, or null to infer it from the file extension."
            )
        if self.column_names is not None and len(set(self.column_names)) != len(self.column_names):
            problems.append(
                f"data.column_names={self.column_names} repeats a name. Fix: give each column a unique name."
            )
        problems.extend(label_names_problems(self.label_names, self.num_labels))
        problems.extend(self._transfer_problems)
        if self.transfer.source == "train_rest" and self.train_limit is None:
            problems.append(
                "data.transfer.source=train_rest uses the training examples after the first "
                "data.train_limit as transfer text, but data.train_limit is null. Fix: set "
                "data.train_limit=N (the first N keep their labels)."
            )
        return problems

    # ------------------------------------------------------------------ checks

    def _check_split(self, split: str, dataset: datasets.Dataset, problems: list[str]) -> LabelEncoding | None:
        """Checks columns and labels of one split; returns how to encode its labels. Without
        configured ``label_names``, a hub ``ClassLabel`` column's names become them."""
        labels, self.label_names = check_split_columns(
            dataset,
            where=f"{split} data: {self.data_sources[split]}",
            columns={"text_column": self.text_column, "text_pair_column": self.text_pair_column,
                     "label_column": self.label_column},
            num_labels=self.num_labels,
            label_names=self.label_names,
            headerless_hint=self.column_names is None and self._file_formats.get(split) in ("tsv", "csv"),
            problems=problems,
        )
        return labels

    def _tokenize(self, split: str, dataset: datasets.Dataset, labels: LabelEncoding | None) -> datasets.Dataset:
        """Tokenize a split; ``labels=None`` (transfer text) gives placeholder labels."""
        transfer = split == "transfer"
        assert labels is not None or transfer
        encoder = TextEncoder(
            tokenizer=self.tokenizer,
            text_column=(self.transfer.text_column or self.text_column) if transfer else self.text_column,
            text_pair_column=self._transfer_pair_column if transfer else self.text_pair_column,
            label_column=self.label_column,
            max_length=self.max_length,
            labels=labels,
            regression=self.is_regression,
        )
        return dataset.map(encoder, batched=True, remove_columns=dataset.column_names, desc=f"Tokenizing {split} split")

    @staticmethod
    def _lengths(dataset: datasets.Dataset) -> list[int]:
        return pc.list_value_length(dataset.with_format("arrow")["input_ids"]).to_pylist()

    # ------------------------------------------------------------------ data loaders

    def calibration_batches(self, count: int) -> list[dict]:
        """The first ``count`` labelled training batches (no transfer text), the same in every process."""
        return list(itertools.islice(self.train_dataloader(transfer=False, sharded=False), count))

    def train_dataloader(self, seed: int | None = None, transfer: bool = True, sharded: bool = True) -> DataLoader:
        """Training batches: length-grouped shuffle, plain shuffle, or file order (``shuffle=False``).

        With a transfer set, each batch holds ``batch_size`` labeled examples followed by
        ``transfer.per_batch(batch_size)`` transfer examples (:class:`TransferMixSampler`). Under
        DDP the sampler hands each rank whole batches of its own (:mod:`distill.data.sampling`),
        length-grouped and with that mix; Lightning does not re-shuffle it.

        Args:
            seed: the shuffling seed; ``None`` uses ``self.seed`` (a teacher's fine-tuning passes its own).
            transfer: ``False`` leaves the transfer set out (labeled batches only).
            sharded: ``False`` gives this process every batch even when a process group exists
                (a one-device loop, such as the teacher's fine-tuning, run inside a DDP process).
        """
        dataset = self._prepared_split("train")
        seed = self.seed if seed is None else seed
        world = {} if sharded else {"num_replicas": 1, "rank": 0}
        if transfer and self._mixed_train is not None:
            per_batch = self.transfer.per_batch(self.batch_size)
            mix = TransferMixSampler(
                self.train_lengths,
                self.transfer_lengths,
                self.batch_size,
                per_batch,
                seed=seed,
                shuffle=self.shuffle,
                group_by_length=self.group_by_length,
                **world,
            )
            return self._padded_loader(self._mixed_train, self.batch_size + per_batch, mix)
        return self._padded_loader(dataset, self.batch_size, self._train_sampler(dataset, seed, sharded=sharded))

    def val_dataloader(self) -> DataLoader:
        """Evaluation batches in file order."""
        dataset = self._prepared_split("eval")
        return self._padded_loader(dataset, self.eval_batch_size, SequentialSampler(dataset))

    def eval_dataloader(self) -> DataLoader:
        """Alias of :meth:`val_dataloader`."""
        return self.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        """The evaluation split, in file order."""
        return self.val_dataloader()

    def teacher_cache_splits(self) -> dict[str, tuple[datasets.Dataset, list[int]]]:
        """What a teacher-output cache covers (:mod:`distill.teacher_cache`): each split the run's
        loaders read, with its token counts; row ``i`` holds the example whose ``example_index`` is
        ``i``. ``train`` is the training set followed by the transfer text when there is one."""
        self.prepare()
        if self._mixed_train is not None:
            train = (self._mixed_train, self.train_lengths + self.transfer_lengths)
        else:
            train = (self.train_dataset, self.train_lengths)
        return {"train": train, "eval": (self.eval_dataset, self.eval_lengths)}

    def collator(self) -> PaddingCollator:
        """Pads a list of examples into a batch (as every loader of this module does)."""
        return PaddingCollator(self.tokenizer)

    def _padded_loader(self, dataset: datasets.Dataset, batch_size: int, sampler: Sampler[int]) -> DataLoader:
        return self._loader(dataset, batch_size, sampler, self.collator())

    def _prepared_split(self, split: str) -> datasets.Dataset:
        self.prepare()
        dataset = self.train_dataset if split == "train" else self.eval_dataset
        assert dataset is not None
        return dataset


def with_example_index(dataset: datasets.Dataset, start: int = 0) -> datasets.Dataset:
    """``dataset`` with an ``example_index`` column (``start``, ``start + 1``, ...): batches carry it,
    so a teacher-output cache can hand back each example's row (never a model input)."""
    return dataset.add_column("example_index", list(range(start, start + len(dataset))))


__all__ = ["FILE_FORMATS", "DataConfigError", "TextClassificationDataModule", "infer_file_format", "load_data_file"]

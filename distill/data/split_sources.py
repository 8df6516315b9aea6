"""Where a labeled-task data module's splits come from: a local file, the hub, the transfer text.

:class:`SplitSources` is the reading half of
:class:`~distill.data.datamodule.TextClassificationDataModule`: each method loads one split (or the
transfer text), records where it came from in ``data_sources`` and, instead of raising, appends a
problem naming the ``data.`` field, the value and the fix.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from distill.data.batching import is_int
from distill.data.sources import hub_name, infer_file_format, missing_file_problem, read_file, read_hub_split, resolve_path
from distill.data.sources import FILE_FORMATS
from distill.data.transfer_source import read_transfer_text


class SplitSources:
    """Loading methods of the labeled-task data module (see the module docstring); the attributes
    they read (``train_file``, ``hub_dataset``, ``transfer``...) are the data module's."""

    def _load_split(self, split: str, problems: list[str]) -> datasets.Dataset | None:
        """Loads one split from its local file, or from the hub; records problems instead of raising."""
        file_field = f"data.{split}_file"
        file = self.train_file if split == "train" else self.eval_file
        if file is None:
            if self.hub_dataset:
                return self._load_hub(split, problems)
            problems.append(
                f"{file_field} and data.hub_dataset are both unset: there is no {split} data. Fix: set "
                f"{file_field}=/path/to/{split}.tsv, or data.hub_dataset (e.g. data.hub_dataset=glue "
                "data.hub_subset=sst2) to load from the Hugging Face hub. (The task configs read their "
                "files from paths.data_dir, i.e. DISTILL_DATA_DIR: is it set?)"
            )
            return None

        path = resolve_path(file)
        if path.is_file():
            return self._load_file(split, path, problems)
        if self.hub_dataset:
            alternative = f", or set {file_field}=null to load {self._hub_name(split)} from the Hugging Face hub"
        else:
            alternative = f", or set {file_field}=null and data.hub_dataset / data.hub_subset to load it from the hub"
        problems.append(missing_file_problem(file_field, file, path, alternative))
        return None

    def _load_file(self, split: str, path: Path, problems: list[str]) -> datasets.Dataset | None:
        file_field = f"data.{split}_file"
        if self.file_format is not None and self.file_format not in FILE_FORMATS:
            return None  # already reported by _check_arguments
        file_format = self.file_format or infer_file_format(path)
        if self.column_names is not None and file_format not in ("tsv", "csv", None):
            problems.append(
                f"data.column_names={self.column_names} only applies to headerless CSV/TSV files, but "
                f"{file_field} is {file_format} ({path}), whose columns are already named. Fix: set "
                "data.column_names=null."
            )
            return None
        read = read_file(
            path, file_format, problems, file_field=file_field, format_field="data.file_format",
            column_names=self.column_names,
        )
        if read is None:
            return None
        dataset, file_format = read
        self.data_sources[split] = f"{file_format} file {path}"
        self._file_formats[split] = file_format
        return dataset

    def _hub_name(self, split: str) -> str:
        return hub_name(str(self.hub_dataset), self.hub_subset, self._hub_split(split))

    def _hub_split(self, split: str) -> str:
        return self.hub_train_split if split == "train" else self.hub_eval_split

    def _load_hub(self, split: str, problems: list[str]) -> datasets.Dataset | None:
        assert self.hub_dataset is not None
        dataset = read_hub_split(
            self.hub_dataset, self.hub_subset, self._hub_split(split), problems,
            field="data.hub_dataset",
            fix=(
                f"point data.{split}_file at a local file, or check data.hub_dataset / data.hub_subset / "
                f"data.hub_{split}_split and hub access."
            ),
        )
        if dataset is not None:
            self.data_sources[split] = self._hub_name(split)
        return dataset

    @property
    def _transfer_pair_column(self) -> str | None:
        if self.transfer.source == "train_rest":
            return self.text_pair_column
        return self.transfer.text_pair_column or self.text_pair_column

    def _load_transfer(self, full_train: datasets.Dataset | None, problems: list[str]) -> datasets.Dataset | None:
        """The raw transfer text (see :func:`~distill.data.transfer_source.read_transfer_text`)."""
        read = read_transfer_text(
            self.transfer, full_train=full_train, train_limit=self.train_limit,
            train_source=self.data_sources.get("train"), text_column=self.text_column,
            pair_column=self._transfer_pair_column, problems=problems,
        )
        if read is None:
            return None
        dataset, self.data_sources["transfer"] = read
        return dataset

    def _apply_limit(self, split: str, dataset: datasets.Dataset) -> datasets.Dataset:
        limit = self.train_limit if split == "train" else self.eval_limit
        if is_int(limit) and 0 < limit < len(dataset):
            return dataset.select(range(limit))
        return dataset


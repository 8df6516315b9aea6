"""Reading raw data: local files by format, Hugging Face hub splits, and plain text columns.

Every data module (labeled classification data, transfer text, pre-training corpora) reads its
sources through these functions. The ``read_*`` functions never raise on bad input: they append a
problem that names the config field, the value, what is allowed and how to fix it, and return
``None``, so that one :class:`~distill.data.datamodule.DataConfigError` lists everything wrong
before training starts.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets

FILE_FORMATS = ("tsv", "csv", "json", "jsonl", "parquet", "text")
"""Values accepted by ``file_format`` (``text``: one example per line, in a column named ``text``)."""

SUFFIX_FORMATS = {
    ".tsv": "tsv",
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".parquet": "parquet",
    ".txt": "text",
    ".tokens": "text",  # WikiText
}
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zst"}
_MAX_LISTED = 20


def format_list(values: Sequence[Any], limit: int = _MAX_LISTED) -> str:
    """``[a, b, ...]`` with at most ``limit`` items shown, for error messages."""
    shown = ", ".join(repr(v) for v in list(values)[:limit])
    more = f", ... ({len(values) - limit} more)" if len(values) > limit else ""
    return f"[{shown}{more}]"


def load_hub_split(name: str, subset: str | None, split: str) -> datasets.Dataset:
    """Loads one split of a Hugging Face hub dataset (``load_dataset(name, subset, split=split)``)."""
    return datasets.load_dataset(name, subset, split=split)


def hub_name(name: str, subset: str | None, split: str) -> str:
    """``hub dataset glue/sst2 split 'train'``: how messages and data sources name a hub split."""
    return f"hub dataset {name}{'/' + subset if subset else ''} split {split!r}"


def infer_file_format(path: str | os.PathLike[str]) -> str | None:
    """Returns the format of ``path`` from its extension (ignoring ``.gz`` etc.), or ``None``."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes.pop()
    return SUFFIX_FORMATS.get(suffixes[-1]) if suffixes else None


def load_data_file(path: Path, file_format: str, column_names: Sequence[str] | None) -> datasets.Dataset:
    """Loads a local file with the matching ``datasets`` builder.

    TSV is read the GLUE way: tab-separated with no quoting (GLUE text holds unbalanced ``"``).
    CSV uses standard quoting. Neither turns strings like ``NA`` or ``null`` into missing values.

    Args:
        path: the file.
        file_format: one of :data:`FILE_FORMATS`.
        column_names: column names for a CSV/TSV file without a header row.

    Returns:
        The whole file as one dataset.
    """
    files = str(path)
    if file_format in ("tsv", "csv"):
        kwargs: dict[str, Any] = {"keep_default_na": False}
        if file_format == "tsv":
            kwargs.update(delimiter="\t", quoting=csv.QUOTE_NONE)
        if column_names is not None:
            kwargs.update(column_names=list(column_names), header=None)
        return datasets.load_dataset("csv", data_files=files, split="train", **kwargs)
    builder = "json" if file_format in ("json", "jsonl") else file_format
    return datasets.load_dataset(builder, data_files=files, split="train")


def resolve_path(file: str | os.PathLike[str]) -> Path:
    """The absolute path of a configured file (``~`` expanded, relative to the working directory)."""
    return Path(os.path.abspath(os.path.expanduser(str(file))))


def missing_file_problem(file_field: str, file: Any, path: Path, alternative: str = "") -> str:
    """The message for a configured path that is not a readable file."""
    if path.exists():
        return f"{file_field}={file!r}: {path} is not a file. Fix: point {file_field} at a data file."
    return (
        f"{file_field}={file!r}: file not found: {path} (relative paths resolve against the working "
        f"directory {os.getcwd()}). Fix: point {file_field} at an existing file (check the data "
        f"directory, e.g. DISTILL_DATA_DIR){alternative}."
    )


def read_file(
    path: Path,
    file_format: str | None,
    problems: list[str],
    *,
    file_field: str,
    format_field: str,
    column_names: Sequence[str] | None = None,
) -> tuple[datasets.Dataset, str] | None:
    """Reads an existing local file; ``file_format`` ``None`` infers it from the extension.

    Returns:
        The dataset and the format it was read as, or ``None`` with the problem recorded.
    """
    resolved = (file_format or infer_file_format(path) or "").lower() or None
    if resolved is None:
        problems.append(
            f"{file_field}: cannot tell the format of {path} from its extension. Fix: set {format_field} to "
            f"one of {format_list(FILE_FORMATS)}, or rename the file with one of the extensions "
            f"{format_list(sorted(SUFFIX_FORMATS))}."
        )
        return None
    if resolved not in FILE_FORMATS:
        problems.append(
            f"{format_field}={resolved!r} is not supported. Allowed: {format_list(FILE_FORMATS)}, or null to "
            "infer it from the file extension."
        )
        return None
    if path.stat().st_size == 0:
        problems.append(f"{file_field}: {path} is empty (0 bytes). Fix: point {file_field} at a file with examples.")
        return None
    if resolved in ("tsv", "csv"):
        problem = _delimited_rows_problem(path, resolved, column_names, file_field)
        if problem:
            problems.append(problem)
            return None
    try:
        dataset = load_data_file(path, resolved, column_names)
    except Exception as error:  # reported as a problem, with the field that caused it
        problems.append(_read_problem(error, path, resolved, file_field, format_field))
        return None
    if len(dataset) == 0:
        problems.append(f"{file_field}: {path} has no rows. Fix: point {file_field} at a file with examples.")
        return None
    return dataset, resolved


def _delimited_rows_problem(
    path: Path, file_format: str, column_names: Sequence[str] | None, file_field: str
) -> str | None:
    """A CSV/TSV file with no data rows, or with rows whose number of fields differs from the
    header's (pandas silently reads such rows shifted into other columns); ``None`` when it is fine
    or cannot be scanned here (compressed, oddly named, not UTF-8: the reader reports those)."""
    if infer_file_format(path) != file_format or path.suffix.lower() in _COMPRESSION_SUFFIXES:
        return None
    options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if file_format == "tsv" else {}
    width = len(column_names) if column_names is not None else None
    rows, bad = 0, []
    try:
        with open(path, encoding="utf-8", newline="") as stream:
            for number, row in enumerate(csv.reader(stream, **options), start=1):
                if not row:
                    continue  # blank lines are skipped by the reader too
                if width is None:
                    width = len(row)  # the header
                    continue
                rows += 1
                if len(row) != width:
                    bad.append(number)
    except (UnicodeDecodeError, csv.Error):
        return None
    if rows == 0:
        return (
            f"{file_field}: {path} has no data rows"
            + (" (a header only)" if column_names is None and width is not None else "")
            + f". Fix: point {file_field} at a file with examples."
        )
    if bad:
        return (
            f"{file_field}: {path} has {len(bad)} rows whose number of fields differs from the {width} "
            f"columns of its {'header' if column_names is None else 'data.column_names'} (lines "
            f"{format_list(bad, 5)}): they would be read shifted into other columns. Fix: repair those rows "
            f"(a stray {'tab' if file_format == 'tsv' else 'delimiter'} in a text?) or drop them."
        )
    return None


def _read_problem(error: Exception, path: Path, file_format: str, file_field: str, format_field: str) -> str:
    """The message for a file the reader failed on: not UTF-8, or unreadable as ``file_format``."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, UnicodeDecodeError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, UnicodeDecodeError):
        return (
            f"{file_field}: {path} is not UTF-8 text (byte {cause.object[cause.start:cause.start + 1]!r} at "
            f"offset {cause.start} of a chunk: {cause.reason}). Fix: re-save it as UTF-8, e.g. "
            f"iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix}."
        )
    return (
        f"{file_field}: could not read {path} as {file_format}: {type(error).__name__}: {error}. Fix: check "
        f"{format_field} (null infers it from the extension)"
        + (" and, for files without a header row, data.column_names." if file_format in ("tsv", "csv") else ".")
    )


def read_hub_split(
    name: str, subset: str | None, split: str, problems: list[str], *, field: str, fix: str
) -> datasets.Dataset | None:
    """Loads a hub split; on failure records ``<field>: loading ... failed: <error>. Fix: <fix>``."""
    try:
        return load_hub_split(name, subset, split)
    except Exception as error:  # reported as a problem, with the field that caused it
        problems.append(
            f"{field}: loading {hub_name(name, subset, split)} from the Hugging Face hub failed: "
            f"{type(error).__name__}: {error}. Fix: {fix}"
        )
        return None


def read_text_source(
    field: str,
    problems: list[str],
    *,
    file: str | os.PathLike[str] | None,
    file_format: str | None,
    hub_dataset: str | None,
    hub_subset: str | None,
    hub_split: str,
    hub_split_key: str,
) -> tuple[datasets.Dataset, str] | None:
    """Reads a text source configured under ``field``: ``hub_dataset`` if set, else ``file`` (a data
    file, or the folder a generation stage wrote: :func:`distill.generation.load_generations`).

    Returns:
        The raw dataset and a description of where it came from, or ``None`` with the problem recorded.
    """
    if hub_dataset is not None:
        fix = (
            f"check {field}.hub_dataset / {field}.hub_subset / {field}.{hub_split_key} and hub access, "
            "or read a local file instead."
        )
        dataset = read_hub_split(
            str(hub_dataset), hub_subset, hub_split, problems, field=f"{field}.hub_dataset", fix=fix
        )
        return None if dataset is None else (dataset, hub_name(str(hub_dataset), hub_subset, hub_split))
    path = resolve_path(str(file))
    if path.is_dir() and _is_generation_folder(path):  # a generation stage's output (stage=generate)
        from distill.generation import IncompleteGenerations, load_generations

        try:
            return load_generations(path), f"generations {path}"
        except (OSError, ValueError, IncompleteGenerations) as error:
            problems.append(f"{field}.file={file!r}: {error}")
            return None
    if not path.is_file():
        problems.append(missing_file_problem(f"{field}.file", file, path))
        return None
    read = read_file(path, file_format, problems, file_field=f"{field}.file", format_field=f"{field}.file_format")
    if read is None:
        return None
    dataset, resolved = read
    return dataset, f"{resolved} file {path}"


def _is_generation_folder(path: Path) -> bool:
    from distill.generation.shards import MANIFEST

    return (path / MANIFEST).is_file()


def non_blank_texts(
    dataset: datasets.Dataset, column: str, limit: int | None, problems: list[str], *, field: str, where: str
) -> datasets.Dataset | None:
    """Drops rows whose ``column`` is missing or blank (WikiText has many), then keeps the first ``limit``."""
    dataset = dataset.filter(lambda text: bool(text and text.strip()), input_columns=column)
    if limit is not None and limit < len(dataset):
        dataset = dataset.select(range(limit))
    if len(dataset) == 0:
        problems.append(f"{field}: the {where} has no non-blank text in column {column!r}.")
        return None
    return dataset


__all__ = [
    "FILE_FORMATS",
    "SUFFIX_FORMATS",
    "format_list",
    "hub_name",
    "infer_file_format",
    "load_data_file",
    "load_hub_split",
    "missing_file_problem",
    "non_blank_texts",
    "read_file",
    "read_hub_split",
    "read_text_source",
    "resolve_path",
]

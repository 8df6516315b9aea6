"""Checks of a classification split's columns against the data config: text columns hold text,
labels fit ``num_labels`` / ``label_names``. Each problem names the field, what the data holds and
the fix; every check appends to one ``problems`` list so all are reported together."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distill.data.batching import is_int
from distill.data.encoding import LabelEncoding
from distill.data.sources import format_list


def hydra_list(values: Sequence[Any]) -> str:
    """``[a,b]``: a list as typed in a Hydra command-line override."""
    return "[" + ",".join(str(v) for v in values) + "]"


def is_text_type(type_: pa.DataType) -> bool:
    """Whether an Arrow column holds strings."""
    return pa.types.is_string(type_) or pa.types.is_large_string(type_)


def _is_float_text(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def check_text_column(
    values: pa.ChunkedArray, field: str, column: str, where: str, problems: list[str], *, allow_blank: bool = False
) -> None:
    """A text column must hold strings in every row, none blank unless ``allow_blank`` (the transfer
    set drops blank lines itself; a labelled example with no text only teaches noise)."""
    if not is_text_type(values.type):
        problems.append(
            f"data.{field}={column!r} in the {where} holds {values.type} values, not text. "
            f"Fix: set data.{field} to a text column."
        )
    elif values.null_count:
        problems.append(
            f"data.{field}={column!r} in the {where} is missing in {values.null_count} rows. "
            "Fix: drop or fill those rows."
        )
    elif not allow_blank:
        blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0)
        count = pc.sum(blank).as_py() or 0
        if count:
            rows = np.flatnonzero(blank.to_numpy()).tolist()
            problems.append(
                f"data.{field}={column!r} in the {where} is blank (empty or whitespace) in {count} rows "
                f"(rows {format_list(rows, 5)}, counted from 0 after the header): the model would "
                "learn a label for no text. Fix: drop or fill those rows."
            )


def check_label_column(
    values: pa.ChunkedArray,
    *,
    label_column: str,
    num_labels: int,
    label_names: list[str] | None,
    where: str,
    problems: list[str],
) -> LabelEncoding | None:
    """Checks a label column against ``num_labels`` / ``label_names``; returns how to encode it.

    ``label_names`` are the configured names (or a hub ``ClassLabel``'s). Problems are appended to
    ``problems``, each naming the field, what the data holds and the fix; ``None`` comes back then.
    """
    field = f"data.label_column={label_column!r}"
    if not is_int(num_labels) or num_labels < 1:
        return None  # reported with the module's arguments
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if values.null_count:
        problems.append(
            f"{field} in the {where} is empty in {values.null_count} rows. Fix: drop those rows "
            "or point data.label_column at a column with a label in every row."
        )
        return None
    type_ = values.type
    numeric = pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_boolean(type_)

    if num_labels == 1:
        if numeric or pa.types.is_decimal(type_):
            return _finite_targets(values, field, where, problems)
        if is_text_type(type_):
            bad = [v for v in pc.unique(values).to_pylist() if not _is_float_text(v)]
            if not bad:
                return _finite_targets(values, field, where, problems)
            problems.append(
                f"data.num_labels=1 means regression, which needs numeric labels, but {field} in the "
                f"{where} holds non-numeric values {format_list(sorted(bad))}. Fix: for classification "
                f"set data.num_labels={len(bad)} data.label_names={hydra_list(sorted(bad))}, or point "
                "data.label_column at a numeric column."
            )
            return None
        problems.append(
            f"data.num_labels=1 (regression) needs numeric labels, but {field} in the {where} holds {type_}."
        )
        return None

    if is_text_type(type_):
        seen = sorted(pc.unique(values).to_pylist())
        if label_names is None:
            problems.append(
                f"{field} in the {where} holds string labels {format_list(seen)}, but data.label_names "
                "is unset, so they cannot be mapped to class ids. Fix: set "
                f"data.label_names={hydra_list(seen)} (list position = class id) and "
                f"data.num_labels={len(seen)}."
            )
            return None
        unknown = [label for label in seen if label not in label_names]
        if unknown:
            problems.append(
                f"data.label_names={label_names} does not contain the labels {format_list(unknown)} "
                f"found in {field} in the {where}. Allowed: the names in data.label_names. Fix: add them "
                "to data.label_names (and data.num_labels), or fix the data."
            )
            return None
        return LabelEncoding("map", {name: i for i, name in enumerate(label_names)})

    if pa.types.is_floating(type_):
        non_integral = pc.filter(values, pc.not_equal(values, pc.floor(values)))
        if len(non_integral):
            examples = sorted(set(non_integral.to_pylist()))
            problems.append(
                f"data.num_labels={num_labels} means classification, but {field} in the {where} "
                f"holds non-integer labels such as {format_list(examples, 5)}. Fix: for regression "
                "set data.num_labels=1 (and data.label_names=null); for classification use class ids "
                f"0..{num_labels - 1}."
            )
            return None
    elif not (pa.types.is_integer(type_) or pa.types.is_boolean(type_)):
        problems.append(
            f"{field} in the {where} holds {type_} values; classification needs integer class ids or "
            "string labels (with data.label_names). Fix: point data.label_column at the label column."
        )
        return None

    check_label_range(values, num_labels, field, where, problems)
    return LabelEncoding("int")


def _finite_targets(values: pa.ChunkedArray, field: str, where: str, problems: list[str]) -> LabelEncoding | None:
    """Regression targets must be finite numbers: one NaN target makes the MSE, and the run, NaN."""
    targets = LabelEncoding("float")(values.to_pylist())
    bad = np.flatnonzero(~np.isfinite(targets))
    if len(bad):
        problems.append(
            f"{field} in the {where} holds {len(bad)} regression targets that are not a number or infinite "
            f"(rows {format_list(bad.tolist(), 5)}, counted from 0 after the header). Fix: drop those rows or "
            "fill in their scores."
        )
        return None
    return LabelEncoding("float")


def check_label_range(values: pa.ChunkedArray, num_labels: int, field: str, where: str, problems: list[str]) -> None:
    """Class ids must lie in ``0..num_labels - 1``; a problem names how many do not, and the fix."""
    if len(values) == 0:
        return
    ids = values.cast(pa.int64())
    bounds = pc.min_max(ids).as_py()
    low, high = bounds["min"], bounds["max"]
    if low >= 0 and high < num_labels:
        return
    outside = pc.sum(pc.or_(pc.less(ids, 0), pc.greater_equal(ids, num_labels))).as_py()
    fix = f"set data.num_labels={high + 1} if the classes are 0..{high}, or fix the labels"
    if low < 0:
        fix += "; a label of -1 usually marks an unlabelled (test) split: use a labelled split"
    problems.append(
        f"data.num_labels={num_labels} allows class ids 0..{num_labels - 1}, but {field} in the "
        f"{where} has {outside} labels outside that range (min {low}, max {high}). Fix: {fix}."
    )

# ------------------------------------------------------------------ tokenization


def label_names_problems(label_names: list[str] | None, num_labels: int) -> list[str]:
    """``data.label_names`` against ``data.num_labels``: one unique name per class, none for regression."""
    if label_names is None:
        return []
    problems = []
    if num_labels == 1:
        problems.append(
            f"data.label_names={label_names} is set but data.num_labels=1 means regression "
            "(float targets, no classes). Fix: set data.label_names=null for regression, or "
            f"data.num_labels={len(label_names)} for classification."
        )
    elif is_int(num_labels) and len(label_names) != num_labels:
        problems.append(
            f"data.label_names has {len(label_names)} names {label_names} but "
            f"data.num_labels={num_labels}. Fix: set data.num_labels={len(label_names)} "
            "or list exactly one name per class."
        )
    if len(set(label_names)) != len(label_names):
        problems.append(f"data.label_names={label_names} repeats a name. Fix: make the names unique.")
    return problems


def check_split_columns(
    dataset: datasets.Dataset,
    *,
    where: str,
    columns: dict[str, str | None],
    num_labels: int,
    label_names: list[str] | None,
    headerless_hint: bool,
    problems: list[str],
) -> tuple[LabelEncoding | None, list[str] | None]:
    """Checks one split's text, pair and label columns (``columns``: ``data.`` field -> column name).

    Returns how to encode the labels and the label names (the configured ones, else a hub
    ``ClassLabel`` column's). ``headerless_hint``: a CSV/TSV read with a header row, so a missing
    column may mean the file has none (the message says how to name the columns).
    """
    present = list(dataset.column_names)
    hint = (
        " If the file has no header row, name its columns with data.column_names=[...] "
        "(the first data row is being read as the header)."
        if headerless_hint else ""
    )
    table = dataset.with_format("arrow")
    labels: LabelEncoding | None = None
    for field, column in columns.items():
        if column is None:
            continue
        if column not in present:
            problems.append(
                f"data.{field}={column!r} is not a column of the {where}. Available columns: "
                f"{format_list(present)}. Fix: set data.{field} to one of them.{hint}"
            )
            hint = ""  # once per split is enough
        elif field == "label_column":
            feature = dataset.features.get(column)
            if label_names is None and isinstance(feature, datasets.ClassLabel):
                label_names = list(feature.names)
            labels = check_label_column(
                table[column], label_column=column, num_labels=num_labels,
                label_names=label_names, where=where, problems=problems,
            )
        else:
            check_text_column(table[column], field, column, where, problems)
    return labels, label_names

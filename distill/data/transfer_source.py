"""Reading the transfer set's text (``data.transfer``): the rest of the training file, a file, or a
hub split, checked like a labelled split's text columns (blank lines are dropped, not refused)."""

from __future__ import annotations

import datasets

from distill.data.label_checks import check_text_column
from distill.data.sources import format_list, non_blank_texts, read_text_source
from distill.data.transfer import TransferConfig


def read_transfer_text(
    config: TransferConfig,
    *,
    full_train: datasets.Dataset | None,
    train_limit: int | None,
    train_source: str | None,
    text_column: str,
    pair_column: str | None,
    problems: list[str],
) -> tuple[datasets.Dataset, str] | None:
    """The raw transfer text and where it came from; ``None`` with the problems recorded.

    Args:
        config: ``data.transfer``.
        full_train: the whole training split (``source=train_rest`` takes the rows after ``train_limit``).
        train_limit: ``data.train_limit``.
        train_source: where the training split came from (for ``train_rest``'s description).
        text_column: ``data.text_column`` (used unless ``data.transfer.text_column`` is set).
        pair_column: the transfer text's second column, or ``None``.
        problems: where problems are appended, each naming its ``data.transfer`` field and the fix.
    """
    if config.source == "train_rest":
        if full_train is None or train_limit is None:
            return None  # reported with the module's arguments
        if train_limit >= len(full_train):
            problems.append(
                f"data.transfer.source=train_rest: data.train_limit={train_limit} keeps all "
                f"{len(full_train)} training examples labeled, so no text is left for the transfer set. "
                f"Fix: set data.train_limit below {len(full_train)}."
            )
            return None
        dataset = full_train.select(range(train_limit, len(full_train)))
        source = f"{train_source}, examples {train_limit}..{len(full_train) - 1} (labels unused)"
    elif config.source in ("file", "hub"):
        read = read_text_source(
            "data.transfer", problems,
            file=config.file, file_format=config.file_format,
            hub_dataset=config.hub_dataset if config.source == "hub" else None,
            hub_subset=config.hub_subset, hub_split=config.hub_split, hub_split_key="hub_split",
        )
        if read is None:
            return None
        dataset, source = read
    else:
        return None  # an unknown source is reported with the module's arguments
    where = f"transfer data: {source}"
    text_column = config.text_column or text_column
    known_problems = len(problems)
    for field, column in (("text_column", text_column), ("text_pair_column", pair_column)):
        if column is None:
            continue
        if column not in dataset.column_names:
            problems.append(
                f"data.transfer.{field}={column!r} is not a column of the {where}. Available columns: "
                f"{format_list(dataset.column_names)}. Fix: set data.transfer.{field}."
            )
            return None
        check_text_column(
            dataset.with_format("arrow")[column], f"transfer.{field}", column, where, problems, allow_blank=True
        )
    if len(problems) > known_problems:
        return None
    texts = non_blank_texts(dataset, text_column, config.limit, problems, field="data.transfer", where=where)
    return None if texts is None else (texts, source)

"""TextClassificationDataModule's refusals: missing files and columns, labels outside the configured
range, bad fields (all reported together, each naming its ``data.*`` field), and the hub path
(read only where no file is named; a failure reported per split). Files are written to ``tmp_path``;
the hub is replaced by a stub.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
from conftest import classification_config_error, prepared_classification, write_table

from distill.data import sources as sources_module

ROWS = [{"sentence": "good", "label": 1}, {"sentence": "bad", "label": 0}]


# ---------------------------------------------------------------------- errors


def test_missing_file_names_field_and_absolute_path(
    tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_table(tmp_path / "dev.tsv", ROWS)
    error = classification_config_error(tokenizer, train_file="missing/train.tsv", eval_file="dev.tsv")
    assert len(error.problems) == 1
    (problem,) = error.problems
    assert "data.train_file" in problem
    assert str(tmp_path / "missing/train.tsv") in problem
    assert "data.hub_dataset" in problem  # the alternative fix


def test_missing_label_column_lists_available_columns(tokenizer: Any, tmp_path: Path) -> None:
    train = write_table(tmp_path / "train.csv", [{"sentence": "x", "target": 1}])
    error = classification_config_error(tokenizer, train_file=train, eval_file=train, eval_limit=1)
    assert len(error.problems) == 2  # train and eval split
    assert "data.label_column='label'" in error.problems[0]
    assert "['sentence', 'target']" in error.problems[0]


def test_label_outside_num_labels_reports_range(tokenizer: Any, tmp_path: Path) -> None:
    train = write_table(tmp_path / "train.tsv", [{"sentence": "x", "label": 5}, {"sentence": "y", "label": 0}])
    dev = write_table(tmp_path / "dev.tsv", ROWS)
    (problem,) = classification_config_error(tokenizer, train_file=train, eval_file=dev, num_labels=2).problems
    assert "data.num_labels=2" in problem and "min 0, max 5" in problem
    assert "data.num_labels=6" in problem  # the suggested fix


def test_unknown_string_label_is_reported(tokenizer: Any, tmp_path: Path) -> None:
    rows = [{"sentence": "x", "label": "yes"}, {"sentence": "y", "label": "maybe"}]
    train = write_table(tmp_path / "train.jsonl", rows)
    dev = write_table(tmp_path / "dev.jsonl", rows[:1])
    (problem,) = classification_config_error(tokenizer, train_file=train, eval_file=dev, label_names=["no", "yes"]).problems
    assert "data.label_names=['no', 'yes'] does not contain the labels ['maybe'] found" in problem


def test_non_numeric_labels_for_regression(tokenizer: Any, tmp_path: Path) -> None:
    train = write_table(tmp_path / "train.csv", [{"sentence": "x", "label": "high"}, {"sentence": "y", "label": "2.5"}])
    (problem, _) = classification_config_error(tokenizer, train_file=train, eval_file=train, num_labels=1).problems
    assert "data.num_labels=1" in problem and "'high'" in problem and "'2.5'" not in problem


def test_all_problems_are_reported_together(tokenizer: Any, tmp_path: Path) -> None:
    train = write_table(tmp_path / "train.tsv", [{"text": "x", "label": 7}])
    error = classification_config_error(
        tokenizer,
        train_file=train,
        eval_file=tmp_path / "nope.tsv",
        batch_size=0,
        file_format="xml",
    )
    fields = ["data.batch_size", "data.file_format", "data.eval_file"]
    assert [next(f for f in fields if f in p) for p in error.problems[:3]] == fields
    error = classification_config_error(tokenizer, train_file=train, eval_file=tmp_path / "nope.tsv")
    assert len(error.problems) == 3
    assert "data.eval_file" in error.problems[0]
    assert "data.text_column='sentence'" in error.problems[1]
    assert "max 7" in error.problems[2]
    assert str(error).startswith("Invalid data configuration (3 problems):")
    assert pickle.loads(pickle.dumps(error)).problems == error.problems


# ---------------------------------------------------------------------- files and the hub


def test_hub_is_read_only_when_no_file_is_configured(
    tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    calls = []

    def fake_hub(name: str, subset: str | None, split: str) -> datasets.Dataset:
        calls.append((name, subset, split))
        label = datasets.ClassLabel(names=["negative", "positive"])
        features = datasets.Features({"sentence": datasets.Value("string"), "label": label})
        return datasets.Dataset.from_dict({"sentence": ["good", "bad"], "label": [1, 0]}, features=features)

    monkeypatch.setattr(sources_module, "load_hub_split", fake_hub)
    dm = prepared_classification(tokenizer, hub_dataset="glue", hub_subset="sst2")
    assert calls == [("glue", "sst2", "train"), ("glue", "sst2", "validation")]
    assert dm.train_dataset["labels"] == [1, 0]
    assert dm.label_names == ["negative", "positive"]  # from the hub's ClassLabel
    assert dm.data_sources["train"] == "hub dataset glue/sst2 split 'train'"

    # A named file that does not exist is an error naming the path, never a silent switch to the hub.
    calls.clear()
    error = classification_config_error(tokenizer, train_file=tmp_path / "absent.tsv", hub_dataset="glue", hub_subset="sst2")
    assert calls == [("glue", "sst2", "validation")]  # the eval split (no file named) still reads the hub
    (problem,) = error.problems
    assert problem.startswith("data.train_file=") and str(tmp_path / "absent.tsv") in problem
    assert "file not found" in problem and "data.train_file=null" in problem


def test_hub_failure_is_reported(tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(name: str, subset: str | None, split: str) -> Any:
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(sources_module, "load_hub_split", offline)
    error = classification_config_error(tokenizer, hub_dataset="glue", hub_subset="sst2")
    assert len(error.problems) == 2  # both splits
    assert "glue/sst2 split 'train'" in error.problems[0] and "hub unreachable" in error.problems[0]
    assert "glue/sst2 split 'validation'" in error.problems[1]

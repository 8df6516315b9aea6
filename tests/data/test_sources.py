"""distill.data.sources: formats from extensions, text sources from files or the hub, blank-line filtering."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from distill.data import sources
from distill.data.sources import infer_file_format, non_blank_texts, read_file, read_text_source


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("train.tsv", "tsv"),
        ("train.TSV", "tsv"),
        ("data.jsonl.gz", "jsonl"),
        ("wiki.test.tokens", "text"),
        ("corpus.txt.bz2", "text"),
        ("table.parquet", "parquet"),
        ("notes.md", None),
        ("README", None),
    ],
)
def test_format_from_extension(name: str, expected: str | None) -> None:
    assert infer_file_format(name) == expected


def _text_source(field: str = "data.corpus", **overrides) -> tuple[tuple[datasets.Dataset, str] | None, list[str]]:
    settings = {"file": None, "file_format": None, "hub_dataset": None, "hub_subset": None, "hub_split": "train"}
    settings.update(overrides)
    problems: list[str] = []
    return read_text_source(field, problems, hub_split_key="split", **settings), problems


def test_text_file_reads_one_row_per_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("first\nsecond\n")
    read, problems = _text_source(file=str(path))
    assert problems == []
    dataset, where = read
    assert dataset["text"] == ["first", "second"] and where == f"text file {path}"


def test_missing_file_and_directory_name_the_field(tmp_path: Path) -> None:
    read, problems = _text_source(file=str(tmp_path / "absent.txt"))
    assert read is None
    assert problems[0].startswith(f"data.corpus.file='{tmp_path / 'absent.txt'}': file not found")
    read, problems = _text_source(file=str(tmp_path))
    assert read is None and f"{tmp_path} is not a file" in problems[0]


def test_unknown_extension_and_format_name_the_allowed_values(tmp_path: Path) -> None:
    path = tmp_path / "corpus.md"
    path.write_text("text\n")
    read, problems = _text_source(file=str(path))
    assert read is None and "set data.corpus.file_format to one of ['tsv', 'csv'" in problems[0]
    problems = []
    assert read_file(path, "xml", problems, file_field="f", format_field="data.x.file_format") is None
    assert problems[0].startswith("data.x.file_format='xml' is not supported. Allowed: ['tsv'")


def test_hub_source_reads_through_load_hub_split(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_hub(name: str, subset: str | None, split: str) -> datasets.Dataset:
        calls.append((name, subset, split))
        return datasets.Dataset.from_dict({"text": ["a", "b"]})

    monkeypatch.setattr(sources, "load_hub_split", fake_hub)
    read, problems = _text_source(hub_dataset="wikitext", hub_subset="wikitext-2-raw-v1", hub_split="test")
    assert calls == [("wikitext", "wikitext-2-raw-v1", "test")] and problems == []
    assert read[1] == "hub dataset wikitext/wikitext-2-raw-v1 split 'test'"


def test_hub_failure_names_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(name: str, subset: str | None, split: str) -> datasets.Dataset:
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(sources, "load_hub_split", offline)
    read, problems = _text_source(hub_dataset="wikitext")
    assert read is None
    assert problems[0].startswith("data.corpus.hub_dataset: loading hub dataset wikitext split 'train'")
    assert "hub unreachable" in problems[0] and "data.corpus.split" in problems[0]


def test_non_blank_texts_drops_blank_and_missing_rows_then_limits() -> None:
    dataset = datasets.Dataset.from_dict({"text": ["one", "", "  ", None, "two", "three"]})
    problems: list[str] = []
    kept = non_blank_texts(dataset, "text", 2, problems, field="data.corpus", where="test data")
    assert kept["text"] == ["one", "two"] and problems == []
    blank = datasets.Dataset.from_dict({"text": ["", " \n"]})
    assert non_blank_texts(blank, "text", None, problems, field="data.corpus", where="test data") is None
    assert problems == ["data.corpus: the test data has no non-blank text in column 'text'."]

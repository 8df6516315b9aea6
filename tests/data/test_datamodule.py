"""TextClassificationDataModule: loading, checks, tokenization and batching.

Real-data tests read GLUE files through the shared ``data_dir`` fixture (``$DISTILL_DATA_DIR``:
skipped when it is unset; a missing file under a set directory fails). Format tests write small
files to ``tmp_path``; the refusals are in test_datamodule_errors.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import classification_config_error, prepared_classification, write_table
from torch.utils.data import SequentialSampler

from distill.data import DataConfigError, LengthGroupedSampler, TextClassificationDataModule
from distill.data.sampling import RankShardedSampler


def _text(tokenizer: Any, dataset: Any, index: int) -> str:
    return tokenizer.decode(dataset[index]["input_ids"], skip_special_tokens=True)


# ---------------------------------------------------------------------- real GLUE data


def test_sst2_limits_labels_and_first_example(tokenizer: Any, data_dir: Path) -> None:
    dm = prepared_classification(
        tokenizer,
        train_file=data_dir / "sst2/train.tsv",
        eval_file=data_dir / "sst2/dev.tsv",
        train_limit=200,
        eval_limit=100,
    )
    assert (len(dm.train_dataset), len(dm.eval_dataset)) == (200, 100)
    assert set(dm.train_dataset.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels", "example_index"}
    assert dm.train_dataset["example_index"] == list(range(200))  # the row a teacher cache reads
    assert set(dm.train_dataset["labels"]) == {0, 1}
    assert dm.train_dataset["labels"][:2] == [0, 0]
    assert _text(tokenizer, dm.train_dataset, 0) == "hide new secretions from the parental units"
    assert dm.train_lengths[0] == len(dm.train_dataset[0]["input_ids"]) == 10
    assert dm.num_labels == 2 and not dm.is_regression and dm.label_names is None
    assert "sst2/train.tsv" in dm.data_sources["train"]


def test_sst2_batches_pad_to_their_own_longest_example(tokenizer: Any, data_dir: Path) -> None:
    dm = prepared_classification(
        tokenizer,
        train_file=data_dir / "sst2/train.tsv",
        eval_file=data_dir / "sst2/dev.tsv",
        eval_limit=100,
        train_limit=10,
        eval_batch_size=16,
        max_length=128,
    )
    widths = []
    loader = dm.eval_dataloader()
    assert isinstance(loader.sampler, SequentialSampler)
    for start, batch in zip(range(0, 100, 16), loader):
        assert isinstance(batch, dict)
        assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels", "example_index"}
        assert batch["example_index"].tolist() == list(range(start, start + len(batch["labels"])))
        assert batch["labels"].dtype == torch.int64
        lengths = dm.eval_lengths[start : start + 16]
        assert batch["input_ids"].shape == (len(lengths), max(lengths))
        assert batch["attention_mask"].sum(dim=1).tolist() == lengths
        padding = batch["attention_mask"] == 0
        assert (batch["input_ids"][padding] == tokenizer.pad_token_id).all()
        widths.append(batch["input_ids"].shape[1])
    assert len(widths) == 7
    assert max(widths) < 128 and len(set(widths)) > 1


def test_unshuffled_train_batches_follow_file_order(tokenizer: Any, data_dir: Path) -> None:
    dm = prepared_classification(
        tokenizer,
        train_file=data_dir / "sst2/train.tsv",
        eval_file=data_dir / "sst2/dev.tsv",
        train_limit=100,
        eval_limit=10,
        batch_size=8,
        shuffle=False,
        group_by_length=False,
    )
    loader = dm.train_dataloader()
    assert type(loader.sampler) is RankShardedSampler and not loader.sampler.shuffle
    labels = torch.cat([batch["labels"] for batch in loader]).tolist()
    assert labels == dm.train_dataset["labels"]
    first = next(iter(loader))
    assert tokenizer.decode(first["input_ids"][0], skip_special_tokens=True).startswith("hide new secretions")


def test_length_grouping_pads_less_than_random_order(tokenizer: Any, data_dir: Path) -> None:
    def padded_tokens(group_by_length: bool) -> tuple[int, int]:
        dm = prepared_classification(
            tokenizer,
            train_file=data_dir / "sst2/train.tsv",
            eval_file=data_dir / "sst2/dev.tsv",
            train_limit=3000,
            eval_limit=10,
            batch_size=32,
            group_by_length=group_by_length,
            seed=3,
        )
        loader = dm.train_dataloader()
        expected = LengthGroupedSampler if group_by_length else RankShardedSampler
        assert type(loader.sampler) is expected and loader.sampler.shuffle
        batches = list(loader)
        assert sum(len(b["labels"]) for b in batches) == 3000
        return sum(b["input_ids"].numel() for b in batches), sum(dm.train_lengths)

    grouped, real_tokens = padded_tokens(True)
    shuffled, _ = padded_tokens(False)
    assert real_tokens <= grouped < shuffled


def test_mrpc_sentence_pairs_get_segment_ids(tokenizer: Any, data_dir: Path) -> None:
    dm = prepared_classification(
        tokenizer,
        train_file=data_dir / "mrpc/train.tsv",
        eval_file=data_dir / "mrpc/dev.tsv",
        text_column="sentence1",
        text_pair_column="sentence2",
        train_limit=50,
        eval_limit=20,
    )
    first = dm.train_dataset[0]
    assert first["labels"] == 1
    sep = first["input_ids"].index(tokenizer.sep_token_id)
    assert set(first["token_type_ids"][: sep + 1]) == {0}
    assert set(first["token_type_ids"][sep + 1 :]) == {1}
    assert tokenizer.decode(first["input_ids"][1:sep]).startswith("amrozi accused his brother")
    batch = next(iter(dm.val_dataloader()))
    assert (batch["token_type_ids"] == 1).any()
    assert set(dm.eval_dataset["labels"]) <= {0, 1}


def test_rte_string_labels_map_to_label_names(tokenizer: Any, data_dir: Path) -> None:
    dm = prepared_classification(
        tokenizer,
        train_file=data_dir / "rte/train.tsv",
        eval_file=data_dir / "rte/dev.tsv",
        text_column="sentence1",
        text_pair_column="sentence2",
        label_names=["entailment", "not_entailment"],
        train_limit=20,
    )
    assert dm.train_dataset["labels"][:2] == [1, 0]  # not_entailment, entailment
    assert len(dm.eval_dataset) == 277
    assert sum(dm.eval_dataset["labels"]) == 131  # not_entailment count in dev


def test_rte_string_labels_without_label_names_suggest_them(tokenizer: Any, data_dir: Path) -> None:
    error = classification_config_error(
        tokenizer,
        train_file=data_dir / "rte/train.tsv",
        eval_file=data_dir / "rte/dev.tsv",
        text_column="sentence1",
        text_pair_column="sentence2",
    )
    assert len(error.problems) == 2  # one per split
    assert "data.label_names=[entailment,not_entailment]" in error.problems[0]
    assert "data.label_column='label'" in error.problems[0]


def test_cola_headerless_files_use_column_names(tokenizer: Any, data_dir: Path) -> None:
    dm = prepared_classification(
        tokenizer,
        train_file=data_dir / "cola/train.tsv",
        eval_file=data_dir / "cola/dev.tsv",
        column_names=["source", "label", "original_mark", "sentence"],
        train_limit=30,
    )
    assert len(dm.train_dataset) == 30 and len(dm.eval_dataset) == 1043
    assert (
        _text(tokenizer, dm.train_dataset, 0)
        == "our friends won ' t buy this analysis, let alone the next one we propose."
    )
    assert sum(dm.eval_dataset["labels"]) == 721


def test_cola_without_column_names_explains_the_header(tokenizer: Any, data_dir: Path) -> None:
    error = classification_config_error(tokenizer, train_file=data_dir / "cola/train.tsv", eval_file=data_dir / "cola/dev.tsv")
    message = str(error)
    assert "data.text_column='sentence'" in message and "data.column_names=[...]" in message
    assert "'gj04'" in message  # the first row, read as a header, is listed as the columns


def test_stsb_regression_has_float_labels(tokenizer: Any, data_dir: Path) -> None:
    dm = prepared_classification(
        tokenizer,
        train_file=data_dir / "stsb/train.tsv",
        eval_file=data_dir / "stsb/dev.tsv",
        text_column="sentence1",
        text_pair_column="sentence2",
        label_column="score",
        num_labels=1,
        train_limit=64,
        eval_limit=64,
    )
    assert dm.is_regression
    assert dm.train_dataset.features["labels"].dtype == "float32"
    assert dm.train_dataset["labels"][:2] == pytest.approx([5.0, 3.8])
    batch = next(iter(dm.train_dataloader()))
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].min() >= 0.0 and batch["labels"].max() <= 5.0


# ---------------------------------------------------------------------- file formats

ROWS = [
    {"sentence": 'he said "hello', "label": 1},  # unbalanced quote: TSV must not treat it as quoting
    {"sentence": "NA", "label": 0},  # must stay text, not become a missing value
    {"sentence": "a, b and c", "label": 1},
    {"sentence": "the end", "label": 0},
]
TEXTS = ['he said " hello', "na", "a, b and c", "the end"]


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".jsonl", ".parquet"])
def test_reads_each_file_format(tokenizer: Any, tmp_path: Path, suffix: str) -> None:
    train = write_table(tmp_path / f"train{suffix}", ROWS)
    dm = prepared_classification(tokenizer, train_file=train, eval_file=train, batch_size=2)
    assert [_text(tokenizer, dm.train_dataset, i) for i in range(4)] == TEXTS
    assert dm.train_dataset["labels"] == [1, 0, 1, 0]
    assert dm.train_dataset.features["labels"].dtype == "int64"


def test_headerless_tsv_with_column_names_and_explicit_format(tokenizer: Any, tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "text": row["sentence"], "y": row["label"]} for i, row in enumerate(ROWS)]
    train = write_table(tmp_path / "train.tsv", rows, header=False).rename(tmp_path / "train.txt")
    dm = prepared_classification(
        tokenizer,
        train_file=train,
        eval_file=train,
        file_format="tsv",
        column_names=["id", "text", "y"],
        text_column="text",
        label_column="y",
        train_limit=3,
    )
    assert [_text(tokenizer, dm.train_dataset, i) for i in range(3)] == TEXTS[:3]
    assert len(dm.eval_dataset) == 4


def test_unshuffled_loader_and_setup_reuse_prepared_data(tokenizer: Any, tmp_path: Path) -> None:
    train = write_table(tmp_path / "train.jsonl", ROWS * 5)
    dm = TextClassificationDataModule(tokenizer, train_file=train, eval_file=train, shuffle=False, batch_size=3)
    assert dm.train_dataset is None
    dm.setup("fit")
    dataset = dm.train_dataset
    assert dm.prepare() is dm and dm.train_dataset is dataset  # idempotent
    sampler = dm.train_dataloader().sampler
    assert type(sampler) is RankShardedSampler and not sampler.shuffle  # shuffle=False wins over grouping
    labels = torch.cat([b["labels"] for b in dm.train_dataloader()]).tolist()
    assert labels == [1, 0, 1, 0] * 5


def test_hydra_instantiation_with_list_config(tokenizer: Any, tmp_path: Path) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    rows = [{"sentence": "x", "label": "yes"}, {"sentence": "y", "label": "no"}]
    train = write_table(tmp_path / "train.jsonl", rows)
    config = OmegaConf.create(
        {
            "_target_": "distill.data.TextClassificationDataModule",
            "train_file": str(train),
            "eval_file": str(train),
            "label_names": ["no", "yes"],
        }
    )
    dm = instantiate(config, tokenizer=tokenizer).prepare()
    assert dm.label_names == ["no", "yes"] and type(dm.label_names) is list
    assert dm.train_dataset["labels"] == [1, 0]

    with pytest.raises(DataConfigError, match=r"data.label_names='no' must be a list"):
        TextClassificationDataModule(tokenizer, label_names="no")

"""Transfer set: unlabeled text reaches the teacher terms and never the label terms."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from distill.data import DataConfigError, TextClassificationDataModule
from distill.data.sampling import TransferMixSampler
from distill.data.transfer import IGNORE_INDEX, TransferConfig, label_mask, split_labels
from distill.losses import HardLabelCE, LossMix, SoftTargetKL
from distill.module import DistillationModule
from tests.conftest import tiny_bert


def _write_tsv(path: Path, rows: list[tuple[str, int]]) -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows))
    return path


LABELED_TEXTS = [f"labeled sentence number {i}" for i in range(6)]
REST_TEXTS = [f"unlabeled words {i} " + "long " * (i % 5) for i in range(20)]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    rows = [(text, i % 2) for i, text in enumerate(LABELED_TEXTS + REST_TEXTS)]
    return {
        "train": _write_tsv(tmp_path / "train.tsv", rows),
        "eval": _write_tsv(tmp_path / "dev.tsv", rows[:4]),
    }


def _module(tokenizer: Any, files: dict[str, Path], **kwargs: Any) -> TextClassificationDataModule:
    return TextClassificationDataModule(
        tokenizer, train_file=files["train"], eval_file=files["eval"], batch_size=2, **kwargs
    )


# ---------------------------------------------------------------------- sampler


def test_mix_sampler_windows_hold_labeled_then_transfer_indices() -> None:
    sampler = TransferMixSampler([5] * 6, [7] * 20, labeled_per_batch=2, transfer_per_batch=3, seed=1)
    order = list(sampler)
    assert sampler.num_batches == 7  # max(ceil(6/2), ceil(20/3))
    assert len(order) == len(sampler) == 7 * 5
    windows = [order[i : i + 5] for i in range(0, len(order), 5)]
    assert all(all(i < 6 for i in w[:2]) and all(6 <= i < 26 for i in w[2:]) for w in windows)
    # The transfer pool (the larger) is walked once, with one reshuffled pass topping up the last window.
    transfer = Counter(i for w in windows for i in w[2:])
    assert set(transfer) == set(range(6, 26)) and sum(transfer.values()) == 21
    # The labeled pool cycles: 14 draws over 6 examples, every example at least twice.
    labeled = Counter(i for w in windows for i in w[:2])
    assert set(labeled) == set(range(6)) and min(labeled.values()) >= 2
    assert list(TransferMixSampler([5] * 6, [7] * 20, 2, 3, seed=1)) == order  # deterministic
    sampler.set_epoch(1)
    assert list(sampler) != order  # a new order each epoch


def test_mix_sampler_without_shuffle_walks_both_pools_in_order() -> None:
    order = list(TransferMixSampler([1] * 3, [1] * 4, 1, 2, shuffle=False))
    assert order == [0, 3, 4, 1, 5, 6, 2, 3, 4]  # 3 batches: the labeled pool sets the epoch here


def test_label_mask_and_split_labels() -> None:
    assert label_mask(torch.tensor([1, IGNORE_INDEX, 0])).tolist() == [True, False, True]
    assert label_mask(torch.tensor([0.5, float("nan")])).tolist() == [True, False]
    mixed = split_labels({"labels": torch.tensor([1, IGNORE_INDEX])})
    assert mixed["label_mask"].tolist() == [True, False]
    assert "label_mask" not in split_labels({"labels": torch.tensor([1, 0])})
    assert "labels" not in split_labels({"labels": torch.tensor([IGNORE_INDEX] * 2)})


# ---------------------------------------------------------------------- data module


def test_train_rest_keeps_labels_for_the_first_examples_only(tokenizer: Any, files: dict[str, Path]) -> None:
    dm = _module(tokenizer, files, train_limit=6, transfer={"source": "train_rest", "ratio": 1.5}).prepare()
    assert len(dm.train_dataset) == 6 and len(dm.transfer_dataset) == 20
    decoded = [tokenizer.decode(ids, skip_special_tokens=True) for ids in dm.transfer_dataset["input_ids"]]
    assert decoded == [text.strip() for text in REST_TEXTS]
    assert set(dm.transfer_dataset["labels"]) == {IGNORE_INDEX}  # the file's labels are never read
    assert "examples 6..25" in dm.data_sources["transfer"]

    batches = list(dm.train_dataloader())
    assert len(batches) == 7  # max(ceil(6/2), ceil(20/3)) batches of 2 labeled + 3 transfer
    # A teacher cache covers the labeled rows then the transfer rows: example_index numbers the mix.
    cached, lengths = dm.teacher_cache_splits()["train"]
    assert cached["example_index"] == list(range(26)) and len(lengths) == 26
    for batch in batches:
        assert batch["input_ids"].shape[0] == 5
        assert batch["label_mask"].tolist() == [True, True, False, False, False]
        assert set(batch["labels"][:2].tolist()) <= {0, 1}
        index = batch["example_index"].tolist()
        assert all(i < 6 for i in index[:2]) and all(i >= 6 for i in index[2:])
        for row, i in zip(batch["input_ids"], index):
            assert row[: lengths[i]].tolist() == cached[i]["input_ids"]
    # Labeled-only batches (a teacher's fine-tuning) leave the transfer set out.
    plain = list(dm.train_dataloader(transfer=False))
    assert len(plain) == 3 and all("label_mask" not in batch for batch in plain)


def test_transfer_from_a_text_file_skips_blank_lines(tokenizer: Any, files: dict[str, Path], tmp_path: Path) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text("first line of text\n\n   \nsecond line\n")
    dm = _module(tokenizer, files, transfer={"source": "file", "file": str(text), "text_column": "text"}).prepare()
    decoded = [tokenizer.decode(ids, skip_special_tokens=True) for ids in dm.transfer_dataset["input_ids"]]
    assert decoded == ["first line of text", "second line"]


def test_regression_transfer_rows_get_nan_placeholders(tokenizer: Any, tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"text {i}\t{i / 10}\n" for i in range(8)))
    dm = TextClassificationDataModule(
        tokenizer, train_file=path, eval_file=path, num_labels=1, batch_size=2, train_limit=4,
        transfer={"source": "train_rest"},
    ).prepare()
    batch = next(iter(dm.train_dataloader()))
    assert batch["label_mask"].tolist() == [True, True, False, False]
    assert torch.isnan(batch["labels"][2:]).all() and not torch.isnan(batch["labels"][:2]).any()


@pytest.mark.parametrize(
    ("transfer", "train_limit", "expected"),
    [
        ({"source": "train_rest"}, None, "data.transfer.source=train_rest uses the training examples after"),
        ({"source": "train_rest"}, 100, "data.train_limit=100 keeps all 26 training examples labeled"),
        ({"source": "web"}, None, "data.transfer.source='web' is not supported. Allowed: null"),
        ({"source": "file"}, None, "data.transfer.source=file needs data.transfer.file"),
        ({"source": "file", "file": "/no/such/file.txt"}, None, "data.transfer.file='/no/such/file.txt': file not found"),
        ({"source": "train_rest", "ratio": 0}, 6, "data.transfer.ratio=0 is invalid"),
        ({"source": "train_rest", "ratios": 2}, 6, "data.transfer: unknown keys ['ratios']"),
        ({"source": "train_rest", "text_column": "body"}, 6, "data.transfer.text_column='body' is not a column"),
    ],
)
def test_bad_transfer_settings_name_the_field(
    tokenizer: Any, files: dict[str, Path], transfer: dict, train_limit: int | None, expected: str
) -> None:
    with pytest.raises(DataConfigError) as info:
        _module(tokenizer, files, train_limit=train_limit, transfer=transfer).prepare()
    assert expected in str(info.value)


def test_transfer_config_defaults_to_off() -> None:
    config, problems = TransferConfig.from_mapping(None)
    assert not config.enabled and problems == []
    assert TransferConfig(source="train_rest", ratio=0.5).per_batch(32) == 16


# ---------------------------------------------------------------------- reaching the losses


def _mixed_batch(tokenizer: Any, files: dict[str, Path]) -> dict[str, torch.Tensor]:
    dm = _module(tokenizer, files, train_limit=6, transfer={"source": "train_rest"}).prepare()
    return next(iter(dm.train_dataloader()))


def _student_grads(loss: LossMix, batch: dict[str, torch.Tensor], teacher) -> tuple[dict, Any]:
    student = tiny_bert(num_layers=2, seed=1, dropout=0.0)
    module = DistillationModule(student=student, teacher=teacher, loss=loss, optimizer=torch.optim.SGD)
    result = module.loss(module._loss_inputs(batch, with_teacher=teacher is not None))
    result.total.backward()
    return {name: p.grad.clone() for name, p in student.named_parameters() if p.grad is not None}, result


def _rows(batch: dict[str, torch.Tensor], rows: slice) -> dict[str, torch.Tensor]:
    return {key: value[rows] for key, value in batch.items() if key != "label_mask"}


def _assert_same_grads(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    for name in left:
        torch.testing.assert_close(left[name], right[name], atol=1e-6, rtol=1e-5, msg=name)


def test_label_terms_see_only_labeled_rows(tokenizer: Any, files: dict[str, Path]) -> None:
    batch = _mixed_batch(tokenizer, files)  # 2 labeled + 2 transfer rows
    ce = lambda: LossMix({"ce": {"weight": 1.0, "loss": HardLabelCE()}})  # noqa: E731
    mixed, result = _student_grads(ce(), batch, teacher=None)
    labeled_only, _ = _student_grads(ce(), _rows(batch, slice(0, 2)), teacher=None)
    assert result.counts == {"ce": 2}
    _assert_same_grads(mixed, labeled_only)  # the transfer rows contribute nothing to CE


def test_teacher_terms_see_every_row_including_transfer_text(tokenizer: Any, files: dict[str, Path]) -> None:
    batch = _mixed_batch(tokenizer, files)
    teacher = tiny_bert(num_layers=2, seed=2, dropout=0.0)
    kd_ce = lambda: LossMix(  # noqa: E731
        {"kd": {"weight": 1.0, "loss": SoftTargetKL()}, "ce": {"weight": 1.0, "loss": HardLabelCE()}}, temperature=2.0
    )
    mixed, result = _student_grads(kd_ce(), batch, teacher)
    assert result.counts == {"kd": 4, "ce": 2}
    labeled_only, _ = _student_grads(kd_ce(), _rows(batch, slice(0, 2)), teacher)
    assert any(not torch.allclose(mixed[n], labeled_only[n], atol=1e-6) for n in mixed)  # transfer rows count

    # Reference: KL over all four rows plus CE over the two labeled rows, each computed directly.
    kd_all, _ = _student_grads(LossMix({"kd": {"weight": 1.0, "loss": SoftTargetKL()}}, 2.0), _rows(batch, slice(0, 4)), teacher)
    ce_labeled, _ = _student_grads(LossMix({"ce": {"weight": 1.0, "loss": HardLabelCE()}}), _rows(batch, slice(0, 2)), None)
    _assert_same_grads(mixed, {n: kd_all[n] + ce_labeled[n] for n in mixed})


def test_training_counts_examples_per_term(tokenizer: Any, files: dict[str, Path]) -> None:
    import lightning as L

    dm = _module(tokenizer, files, train_limit=6, transfer={"source": "train_rest"})
    loss = LossMix({"kd": {"weight": 0.5, "loss": SoftTargetKL()}, "ce": {"weight": 0.5, "loss": HardLabelCE()}}, 2.0)
    module = DistillationModule(
        student=tiny_bert(num_layers=2, seed=1), teacher=tiny_bert(num_layers=2, seed=2), loss=loss,
        optimizer=torch.optim.SGD,
    )
    trainer = L.Trainer(
        max_steps=5, logger=False, enable_checkpointing=False, limit_val_batches=0,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm)
    assert module.examples_seen == {"kd": 5 * 4, "ce": 5 * 2}

"""distill.data.batching: the settings both text data modules share, checked and applied the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distill.data import DataConfigError, LengthGroupedSampler, TextClassificationDataModule, TextCorpusDataModule
from distill.data.sampling import RankShardedSampler


def _classification(tokenizer: Any, tmp_path: Path, **settings: Any) -> TextClassificationDataModule:
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"sentence {'word ' * i}\t{i % 2}\n" for i in range(12)))
    return TextClassificationDataModule(tokenizer, train_file=path, eval_file=path, **settings)


def _corpus(tokenizer: Any, tmp_path: Path, **settings: Any) -> TextCorpusDataModule:
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"line {'word ' * i}\n" for i in range(12)))
    return TextCorpusDataModule(tokenizer, train_sources=[{"file": str(path)}], eval_sources=[{"file": str(path)}], **settings)


MODULES = {"classification": _classification, "corpus": _corpus}


@pytest.mark.parametrize("kind", MODULES)
@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"batch_size": 0}, "data.batch_size=0 is invalid: use an integer >= 1."),
        ({"eval_batch_size": 2.5}, "data.eval_batch_size=2.5 is invalid: use an integer >= 1."),
        ({"train_limit": 0}, "data.train_limit=0 is invalid: use an integer >= 1, or null for all examples."),
        ({"eval_limit": True}, "data.eval_limit=True is invalid: use an integer >= 1, or null for all examples."),
        ({"num_workers": -1}, "data.num_workers=-1 is invalid: use an integer >= 0."),
        ({"max_length": 1024}, "data.max_length=1024 exceeds the tokenizer's model_max_length=512"),
    ],
)
def test_both_modules_report_bad_shared_settings_by_field(
    tokenizer: Any, tmp_path: Path, kind: str, settings: dict, expected: str
) -> None:
    with pytest.raises(DataConfigError) as raised:
        MODULES[kind](tokenizer, tmp_path, **settings).prepare()
    assert any(problem.startswith(expected) for problem in raised.value.problems), raised.value.problems


@pytest.mark.parametrize("kind", MODULES)
@pytest.mark.parametrize(
    ("shuffle", "group_by_length", "sampler"),
    [(True, True, LengthGroupedSampler), (True, False, RankShardedSampler), (False, True, RankShardedSampler)],
)
def test_both_modules_pick_the_training_order_the_same_way(
    tokenizer: Any, tmp_path: Path, kind: str, shuffle: bool, group_by_length: bool, sampler: type
) -> None:
    data = MODULES[kind](tokenizer, tmp_path, batch_size=4, shuffle=shuffle, group_by_length=group_by_length)
    loader = data.prepare().train_dataloader(seed=3)
    assert type(loader.sampler) is sampler and loader.sampler.shuffle == shuffle and loader.batch_size == 4
    order = list(loader.sampler)
    assert sorted(order) == list(range(12))
    if not shuffle:
        assert order == list(range(12))
    else:  # the seed decides the order: the same seed gives the same order
        assert order == list(data.train_dataloader(seed=3).sampler)

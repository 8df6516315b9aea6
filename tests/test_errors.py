"""One error class for bad input (distill/errors.py): the data and model errors are ConfigErrors
with ``problems``, so the CLI catches one class, and each survives pickling (DataLoader workers, DDP)."""

import pickle

import pytest

from distill.data import DataConfigError
from distill.errors import ConfigError
from distill.models import ModelConfigError


@pytest.mark.parametrize(
    ("error", "problems", "text"),
    [
        (ConfigError(["a: bad", "b: worse"]), ["a: bad", "b: worse"], "2 problem(s) in the run config:\n  - a: bad\n  - b: worse"),
        (DataConfigError(["data.x: bad"]), ["data.x: bad"], "Invalid data configuration (1 problem):\n  1. data.x: bad"),
        (ModelConfigError("teacher.name_or_path: no such model"), ["teacher.name_or_path: no such model"], "teacher.name_or_path: no such model"),
    ],
)
def test_every_input_error_is_a_config_error_with_its_problems(error, problems, text):
    assert isinstance(error, ConfigError) and isinstance(error, ValueError)
    assert error.problems == problems and str(error) == text
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and copy.problems == problems and str(copy) == text

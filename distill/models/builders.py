"""Build teacher and student models from a :class:`ModelSpec` (no losses, no data here)."""

from __future__ import annotations

import copy
import logging
import re

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from distill.models.spec import ModelConfigError, ModelSpec, resolve_name_or_path

#: Task name -> transformers auto class.
#:
#: - ``sequence_classification``: logits ``(B, C)``, labels ``(B,)`` (``data.num_labels`` classes).
#: - ``masked_lm``: logits ``(B, T, V)``, labels ``(B, T)`` with -100 off the masked positions; the
#:   module hands the losses only the masked rows, ``(N, V)`` and ``(N,)``.
#: - ``feature_extraction``: the base model (no head): hidden states only, no logits, no labels.
#: - ``causal_lm``: logits ``(B, T, V)``, labels ``(B, T)`` (the tokens, -100 on padding and prompts);
#:   the module shifts them once (:meth:`LossInputs.for_next_tokens`): ``(N, V)`` and ``(N,)``.
#: - ``seq2seq_lm``: an encoder-decoder (T5, BART): decoder logits ``(B, T, V)`` and target labels
#:   ``(B, T)`` (-100 on padding), no shift: the rows with a label, ``(N, V)`` and ``(N,)``.
AUTO_MODEL_BY_TASK = {
    "sequence_classification": AutoModelForSequenceClassification,
    "masked_lm": AutoModelForMaskedLM,
    "feature_extraction": AutoModel,
    "causal_lm": AutoModelForCausalLM,
    "seq2seq_lm": AutoModelForSeq2SeqLM,
}

#: What each task's logits are: one row per example, one per token, or none at all.
TASK_LOGITS = {
    "sequence_classification": "sequence",
    "masked_lm": "token",
    "feature_extraction": None,
    "causal_lm": "token",
    "seq2seq_lm": "token",
}

log = logging.getLogger(__name__)


def _from_pretrained(auto_class, name_or_path: str, **kwargs) -> tuple[PreTrainedModel, set[str]]:
    """``auto_class.from_pretrained``, plus the names of the weights it initialised afresh.

    Those (a task head on a base model, typically) are said here in one line; transformers' own
    LOAD REPORT is filtered from the console by default (:mod:`distill.quiet`).
    """
    model, info = auto_class.from_pretrained(
        resolve_name_or_path(name_or_path), output_loading_info=True, **kwargs
    )
    fresh = sorted(name for name in info["missing_keys"] if not name.endswith("position_ids"))
    if fresh:
        shown = ", ".join(fresh[:4]) + (f" ... ({len(fresh)} in all)" if len(fresh) > 4 else "")
        log.info("%s: newly initialised, not in the checkpoint: %s", name_or_path, shown)
    if info["unexpected_keys"]:
        log.debug("%s: checkpoint weights unused by %s: %s", name_or_path, type(model).__name__,
                  sorted(info["unexpected_keys"]))
    return model, set(info["missing_keys"])


def _label_kwargs(num_labels: int, label_names: list[str] | None, task: str = "sequence_classification") -> dict:
    if task != "sequence_classification":
        return {}  # no class head: num_labels and label names mean nothing here
    kwargs: dict = {"num_labels": num_labels}
    if num_labels == 1:
        kwargs["problem_type"] = "regression"
    elif label_names:
        kwargs["id2label"] = dict(enumerate(label_names))
        kwargs["label2id"] = {name: index for index, name in enumerate(label_names)}
    return kwargs


def load_model_config(
    spec: ModelSpec, num_labels: int, *, teacher_config: PretrainedConfig | None = None
) -> PretrainedConfig:
    """The transformers config ``spec`` will build, without loading any weights (for validation)."""
    if spec.name_or_path is not None:
        config = AutoConfig.from_pretrained(resolve_name_or_path(spec.name_or_path))
    elif spec.config is not None:
        settings = dict(spec.config)
        config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    else:
        source = (
            AutoConfig.from_pretrained(resolve_name_or_path(spec.init_source))
            if spec.init_source
            else teacher_config
        )
        if source is None:
            raise ModelConfigError(
                "student.init_from_teacher_layers needs a teacher (or student.init_source) to copy from"
            )
        config = copy.deepcopy(source)
        config.num_hidden_layers = len(spec.init_from_teacher_layers)
    for key, value in spec.config_overrides.items():
        setattr(config, key, value)
    return config


def load_tokenizer(spec: ModelSpec, fallback: PreTrainedTokenizerBase | None = None):
    """The spec's tokenizer: ``spec.tokenizer``, else its ``name_or_path``, else ``fallback``."""
    source = spec.tokenizer or spec.name_or_path or spec.init_source
    if source is None:
        if fallback is None:
            raise ModelConfigError(
                "a model built from `config` needs `tokenizer:` (a hub name or path) or a teacher"
            )
        return fallback
    return AutoTokenizer.from_pretrained(resolve_name_or_path(source))


def build_model(
    spec: ModelSpec,
    num_labels: int,
    *,
    task: str = "sequence_classification",
    teacher: PreTrainedModel | None = None,
    label_names: list[str] | None = None,
    attn_implementation: str | None = None,
) -> tuple[PreTrainedModel, set[str]]:
    """Build the model ``spec`` describes.

    Returns:
        ``(model, newly_initialised)``: the model in ``spec.dtype`` and the names of parameters that
        were not loaded from a checkpoint (a task head added on top of a base model, say).
    """
    auto_class = AUTO_MODEL_BY_TASK[task]
    label_kwargs = _label_kwargs(num_labels, label_names, task)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    dtype = getattr(torch, spec.dtype)
    if spec.name_or_path is not None:
        return _from_pretrained(
            auto_class, spec.name_or_path, dtype=dtype, **label_kwargs, **spec.config_overrides, **extra
        )
    if spec.config is not None:
        config = load_model_config(spec, num_labels)
        for key, value in label_kwargs.items():
            setattr(config, key, value)
        model = auto_class.from_config(config, dtype=dtype, **extra)
        return model, {name for name, _ in model.named_parameters()}
    source = teacher
    if spec.init_source:
        source, _ = _from_pretrained(auto_class, spec.init_source, **label_kwargs)
    if source is None:
        raise ModelConfigError("student.init_from_teacher_layers needs a teacher or student.init_source")
    student = student_from_teacher_layers(
        source, spec.init_from_teacher_layers, spec.config_overrides, extra
    )
    return student.to(dtype), set()


def find_layer_stack(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The transformer block list (``bert.encoder.layer``, ``model.layers``...) and its dotted name.

    It is the ``nn.ModuleList`` whose length equals ``config.num_hidden_layers``.
    """
    depth = model.config.num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            return name, module
    raise ModelConfigError(
        f"{type(model).__name__}: found no module list of {depth} layers to copy layers from"
    )


def student_from_teacher_layers(
    teacher: PreTrainedModel,
    layers: list[int],
    config_overrides: dict | None = None,
    model_kwargs: dict | None = None,
) -> PreTrainedModel:
    """DistilBERT-style student (Sanh et al. 2019): the teacher's architecture keeping ``layers``.

    Student layer ``j`` gets the weights of teacher layer ``layers[j]``; every weight outside the
    layer stack (embeddings, pooler, final norm, task head) is copied as is. Overrides may change
    only what keeps shapes (dropout...); a width change cannot copy weights and is refused.
    """
    depth = teacher.config.num_hidden_layers
    bad = [index for index in layers if not -depth <= index < depth]
    if bad:
        raise ModelConfigError(
            f"student.init_from_teacher_layers={list(layers)}: indices {bad} are out of range for "
            f"the teacher ({type(teacher).__name__}), which has {depth} layers (valid: 0..{depth - 1})"
        )
    layers = [index % depth for index in layers]
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    for key, value in (config_overrides or {}).items():
        setattr(config, key, value)
    student = type(teacher)._from_config(config, **(model_kwargs or {}))
    stack_name, _ = find_layer_stack(teacher)
    layer_key = re.compile(rf"^{re.escape(stack_name)}\.(\d+)\.(.*)$")
    student_of_teacher = {teacher_index: student_index for student_index, teacher_index in enumerate(layers)}
    teacher_state = teacher.state_dict()
    student_state = student.state_dict()
    copied = {}
    for key, value in teacher_state.items():
        match = layer_key.match(key)
        if match:
            teacher_index = int(match.group(1))
            if teacher_index not in student_of_teacher:
                continue
            key = f"{stack_name}.{student_of_teacher[teacher_index]}.{match.group(2)}"
        if key not in student_state:
            continue
        if student_state[key].shape != value.shape:
            raise ModelConfigError(
                f"student.config_overrides change the shape of {key} "
                f"({tuple(value.shape)} in the teacher, {tuple(student_state[key].shape)} in the "
                "student); layer copying needs the teacher's widths"
            )
        copied[key] = value.detach().clone()
    missing = set(student_state) - set(copied)
    if any(not name.endswith("position_ids") for name in missing):
        raise ModelConfigError(f"layer copy left student weights uninitialised: {sorted(missing)[:5]}")
    student.load_state_dict(copied, strict=False)
    return student


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (tied weights counted once)."""
    return sum(parameter.numel() for parameter in model.parameters())


def count_nonzero_parameters(model: nn.Module) -> int:
    """Number of parameters that are not zero (tied weights counted once): what pruning leaves.
    Integer weights (torchao's quantized tensors) count their non-zero codes' dequantized values."""
    total = 0
    for parameter in model.parameters():
        values = parameter.dequantize() if hasattr(parameter, "qdata") else parameter
        total += int(torch.count_nonzero(values.detach()))
    return total

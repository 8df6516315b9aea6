"""Capture intermediate module outputs with forward hooks (no model code changes, any attention kernel).

Attention losses need each layer's query, key and value projections. They are read from the
projection modules' outputs, so the fast default attention (sdpa) stays on: no
``attn_implementation="eager"`` and no full attention maps returned by the model.

Any other module is captured by its dotted path (``model.get_submodule(path)``), so this works
for any ``nn.Module``, not only transformers models. Its output is stored under the key
``module:<path>`` (:func:`module_key`), beside ``query``/``key``/``value``, as a one-element list.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from distill.models.builders import find_layer_stack
from distill.models.spec import ModelConfigError

#: Per-layer paths of the query/key/value projections, by architecture (tried in order).
PROJECTION_PATHS = (
    {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value"},  # BERT, RoBERTa, ELECTRA
    {"query": "self_attn.q_proj", "key": "self_attn.k_proj", "value": "self_attn.v_proj"},  # Llama, Mistral, Qwen
    {"query": "attention.q_lin", "key": "attention.k_lin", "value": "attention.v_lin"},  # DistilBERT
)


def attention_projections(model: nn.Module, names: Sequence[str]) -> dict[str, list[nn.Module]]:
    """For each of ``names`` (``query``/``key``/``value``), that projection module of every layer."""
    _, layers = find_layer_stack(model)
    for paths in PROJECTION_PATHS:
        try:
            return {name: [layer.get_submodule(paths[name]) for layer in layers] for name in names}
        except AttributeError:
            continue
    raise ModelConfigError(
        f"{type(model).__name__}: no query/key/value projections found under its layers "
        f"(tried {[p['query'] for p in PROJECTION_PATHS]}); attention losses need one of these layouts"
    )


#: Prefix of the ``captured`` keys of modules named by dotted path (beside ``query``/``key``/``value``).
MODULE_PREFIX = "module:"


def module_key(path: str) -> str:
    """The ``ModelOutputs.captured`` key of the module at dotted ``path``: ``module:<path>``."""
    return f"{MODULE_PREFIX}{path}"


def close_module_names(names: Sequence[str], path: str, count: int = 5) -> list[str]:
    """Module names most like ``path`` (difflib), for error messages."""
    return difflib.get_close_matches(path, list(names), n=count, cutoff=0.6)


def find_module(model: nn.Module, path: str, role: str = "model") -> nn.Module:
    """``model.get_submodule(path)``, or a :class:`ModelConfigError` naming ``role`` and close matches."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        close = close_module_names(names, path)
        hint = f"close matches: {close}" if close else f"its top-level modules: {[n for n in names if '.' not in n]}"
        raise ModelConfigError(f"{role} ({type(model).__name__}) has no module {path!r}; {hint}") from None


def capture_modules(
    model: nn.Module, attention_names: Sequence[str] = (), module_paths: Sequence[str] = (), role: str = "model"
) -> dict[str, list[nn.Module]] | None:
    """What :func:`capture_outputs` hooks in ``model``: the ``attention_names`` projections of every
    layer and each module in ``module_paths`` (key ``module:<path>``); ``None`` when nothing is asked."""
    modules: dict[str, list[nn.Module]] = {}
    if attention_names:
        modules.update(attention_projections(model, attention_names))
    for path in module_paths:
        modules[module_key(path)] = [find_module(model, path, role)]
    return modules or None


def _static_width(module: nn.Module) -> int | None:
    """The last dimension of ``module``'s output when its type tells it without running it."""
    if isinstance(getattr(module, "out_features", None), int):  # nn.Linear and friends
        return module.out_features
    if isinstance(module, nn.Embedding):
        return module.embedding_dim
    if isinstance(module, nn.LayerNorm) and module.normalized_shape:
        return int(module.normalized_shape[-1])
    if isinstance(getattr(module, "nf", None), int):  # transformers' Conv1D (GPT-2)
        return module.nf
    weight = getattr(module, "weight", None)
    if "Norm" in type(module).__name__ and isinstance(weight, torch.Tensor) and weight.dim() == 1:
        return int(weight.shape[0])  # RMSNorm (Llama, T5...)
    return None


def module_output_widths(model: nn.Module) -> dict[str, int | None]:
    """Every named submodule of ``model`` (dotted path) and the width (last dimension) of its output
    where it is known without a forward pass, else ``None``.

    Known: ``Linear`` (``out_features``), ``Embedding``, ``LayerNorm``/RMSNorm, transformers'
    ``Conv1D``, and each block of a transformers model's layer stack (``config.hidden_size``). Works
    on a model built on the ``meta`` device (validation lists modules without loading weights).
    """
    widths = {name: _static_width(module) for name, module in model.named_modules() if name}
    config = getattr(model, "config", None)
    hidden = getattr(config, "hidden_size", None)
    if isinstance(hidden, int):
        try:
            stack, layers = find_layer_stack(model)
        except (ModelConfigError, AttributeError, TypeError):
            return widths
        for index in range(len(layers)):
            widths[f"{stack}.{index}"] = hidden
    return widths


def _first_tensor(output):
    """A module's output as one tensor: the first element of a tuple/list or of a ``ModelOutput``."""
    if isinstance(output, (tuple, list)):
        return output[0] if output else None
    if isinstance(output, Mapping):
        return next(iter(output.values()), None)
    return output


@contextmanager
def capture_outputs(modules: dict[str, list[nn.Module]]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Within the block, every forward of ``modules[name][i]`` stores its output at ``captured[name][i]``.

    A module that returns a tuple (a transformer layer, say) is stored as its first element. The
    hooks exist only inside the block: they are removed on exit, also on an exception.
    """
    captured: dict[str, list[torch.Tensor | None]] = {name: [None] * len(group) for name, group in modules.items()}
    handles = []
    for name, group in modules.items():
        for index, module in enumerate(group):

            def hook(_module, _inputs, output, name=name, index=index):
                captured[name][index] = _first_tensor(output)

            handles.append(module.register_forward_hook(hook))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()

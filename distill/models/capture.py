"""Capture intermediate module outputs with forward hooks (no model code changes, any attention kernel).

Attention losses need each layer's query, key and value projections. They are read from the
projection modules' outputs, so the fast default attention (sdpa) stays on: no
``attn_implementation="eager"`` and no full attention maps returned by the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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


@contextmanager
def capture_outputs(modules: dict[str, list[nn.Module]]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Within the block, every forward of ``modules[name][i]`` stores its output at ``captured[name][i]``."""
    captured: dict[str, list[torch.Tensor | None]] = {name: [None] * len(group) for name, group in modules.items()}
    handles = []
    for name, group in modules.items():
        for index, module in enumerate(group):

            def hook(_module, _inputs, output, name=name, index=index):
                captured[name][index] = output

            handles.append(module.register_forward_hook(hook))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()

"""One calibration pass: the student run over calibration batches with forward hooks on the layers
a PTQ method reads (GPTQ's Hessians, the LLM.int8() outlier search)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from distill.module import TARGET_KEYS

#: A forward hook: ``hook(layer, inputs, output)``.
Hook = Callable[[nn.Module, tuple, torch.Tensor], None]


def run_calibration(
    model: nn.Module,
    hooks: dict[str, Hook],
    calibration: Iterable[dict[str, torch.Tensor]],
    on_batch: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> None:
    """Forward every calibration batch through ``model`` in eval mode (no dropout), under
    ``no_grad``, on the model's device, with ``hooks[name]`` on the submodule ``name``. Targets
    (``labels``, ``label_mask``) are left out; ``on_batch`` sees each batch's inputs before its
    forward pass. The hooks are removed and the training mode restored afterwards."""
    handles = [model.get_submodule(name).register_forward_hook(hook) for name, hook in hooks.items()]
    device, training = next(model.parameters()).device, model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in calibration:
                inputs = {key: value.to(device) for key, value in batch.items() if key not in TARGET_KEYS}
                if on_batch is not None:
                    on_batch(inputs)
                model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)

"""One calibration pass: the student run over calibration batches with forward hooks on the layers
a compression method reads (GPTQ's and SparseGPT's Hessians, Wanda's input norms, AWQ's activation
scales, the LLM.int8() outlier search, FFN neuron and head importance), and the damped inverse-Hessian factor GPTQ and SparseGPT
both walk."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from distill.module import TARGET_KEYS

#: A forward hook: ``hook(layer, inputs, output)``.
Hook = Callable[[nn.Module, tuple, torch.Tensor], None]
#: λ = DAMPING · mean(diag H), added to the Hessian's diagonal before it is inverted.
DAMPING = 0.01


@contextmanager
def calibrating(
    model: nn.Module, hooks: dict[str, Hook] | None = None, pre_hooks: dict[str, Callable] | None = None
) -> Iterator[torch.device]:
    """``model`` in eval mode (no dropout) with ``hooks[name]`` (forward hooks) and ``pre_hooks[name]``
    (forward pre-hooks) on the submodules ``name``; yields the model's device. The hooks are removed
    and the training mode restored afterwards. Gradients are the caller's choice."""
    handles = [model.get_submodule(name).register_forward_hook(hook) for name, hook in (hooks or {}).items()]
    handles += [model.get_submodule(name).register_forward_pre_hook(hook) for name, hook in (pre_hooks or {}).items()]
    device, training = next(model.parameters()).device, model.training
    model.eval()
    try:
        yield device
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)


def model_inputs(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch's model inputs on ``device``; targets (``labels``, ``label_mask``) left out."""
    return {key: value.to(device) for key, value in batch.items() if key not in TARGET_KEYS}


def run_calibration(
    model: nn.Module,
    hooks: dict[str, Hook],
    calibration: Iterable[dict[str, torch.Tensor]],
    on_batch: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> None:
    """Forward every calibration batch through ``model`` (:func:`calibrating`: eval mode, ``hooks``
    on) under ``no_grad``, targets left out; ``on_batch`` sees each batch's inputs before its
    forward pass."""
    with calibrating(model, hooks) as device, torch.no_grad():
        for batch in calibration:
            inputs = model_inputs(batch, device)
            if on_batch is not None:
                on_batch(inputs)
            model(**inputs)


@dataclass
class InputStatistics:
    """What one layer's inputs ``X`` (``n × K``: the token positions of the calibration batches,
    padding left out) were: ``n``, the squared norm of each input feature ``‖X_j‖² = Σ_t x_tj²``,
    its absolute sum ``Σ_t |x_tj|`` (AWQ's activation scale is its mean), and, when asked for, the
    Gram matrix ``XᵀX`` (``K × K``)."""

    count: int
    square_sums: torch.Tensor
    gram: torch.Tensor | None = None
    abs_sums: torch.Tensor | None = None

    @property
    def mean_abs(self) -> torch.Tensor:
        """``Σ_t |x_tj| / n`` per input feature."""
        return self.abs_sums / self.count

    @property
    def norms(self) -> torch.Tensor:
        """``‖X_j‖₂`` per input feature (Wanda's activation norm)."""
        return self.square_sums.sqrt()

    def hessian(self) -> torch.Tensor:
        """``H = 2 XᵀX / n``: the curvature of ``‖X Wᵀ − X Ŵᵀ‖² / n`` (GPTQ, SparseGPT)."""
        if self.gram is None:
            raise ValueError("the Hessian needs the Gram matrix: collect with gram=True")
        return 2 * self.gram / self.count


def input_statistics(
    model: nn.Module, names: Iterable[str], calibration: Iterable[dict[str, torch.Tensor]], gram: bool = False
) -> dict[str, InputStatistics]:
    """The :class:`InputStatistics` of the first input of each module in ``names`` over the
    calibration batches (``gram``: with ``XᵀX``, ``K²`` floats per layer). Padding positions
    (``attention_mask == 0``) are left out. A layer no input reached is an error."""
    names = list(names)
    stats: dict[str, InputStatistics] = {}
    mask: list[torch.Tensor | None] = [None]

    def recorder(name: str) -> Hook:
        def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            x = args[0].detach()
            if mask[0] is not None and x.shape[:-1] == mask[0].shape:
                x = x[mask[0].bool()]  # token positions only, padding left out
            x = x.reshape(-1, x.shape[-1]).float()
            if name not in stats:
                width = x.shape[-1]
                stats[name] = InputStatistics(
                    0, x.new_zeros(width), x.new_zeros(width, width) if gram else None, x.new_zeros(width)
                )
            entry = stats[name]
            entry.count += x.shape[0]
            entry.square_sums += x.square().sum(0)
            entry.abs_sums += x.abs().sum(0)
            if entry.gram is not None:
                entry.gram.addmm_(x.T, x)

        return record

    run_calibration(
        model, {name: recorder(name) for name in names}, calibration,
        on_batch=lambda inputs: mask.__setitem__(0, inputs.get("attention_mask")),
    )
    unseen = [name for name in names if name not in stats or stats[name].count == 0]
    if unseen:
        raise ValueError(f"no calibration input reached {unseen[:5]}: give at least one calibration batch")
    return stats


def inverse_hessian_factor(hessian: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``U``, the upper Cholesky factor of ``(H + λI)⁻¹`` (``λ = DAMPING · mean(diag H)``), and a
    float copy of ``weight`` with the columns of inputs that never fire (``H_jj = 0``: the weight is
    irrelevant) set to zero; those get ``H_jj = 1`` so ``H`` stays invertible. GPTQ and SparseGPT
    spread each column's error over the later columns along ``U``."""
    W, H = weight.float().clone(), hessian.float().clone()
    dead = H.diagonal() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H.diagonal().add_(DAMPING * H.diagonal().mean())
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True), W

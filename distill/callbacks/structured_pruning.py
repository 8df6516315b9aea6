"""The ``compress`` group's structured pruning callbacks: whole FFN neurons
(:class:`FeedForwardPruning`) and whole attention heads (:class:`AttentionHeadPruning`), masked
during training like any pruning (:class:`~distill.callbacks.pruning.MaskedPruning`) and removed at
export where the stock config can hold the smaller shape. Formulas and papers:
:mod:`distill.pruning.structured`, :mod:`distill.pruning.heads`, docs/compression.md.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from distill.callbacks.pruning import Calibration, MaskedPruning
from distill.pruning.masks import MaskSet, kept_count
from distill.pruning.settings import HEADS_FIELD, IMPORTANCE

log = logging.getLogger(__name__)


class _StructuredPruning(MaskedPruning):
    """What the structured callbacks share: an ``importance`` (activation or gradient) and the
    settings that go with it."""

    structure = ""

    def __init__(
        self,
        sparsity: float = 0.5,
        importance: str = "activation",
        schedule: str = "one_shot",
        start_step: int = 0,
        end_step: int | None = None,
        every: int = 10,
        initial_sparsity: float = 0.0,
        calibration_batches: int = 8,
        restart_schedule: bool = False,
    ) -> None:
        problems = []
        if importance not in IMPORTANCE:
            problems.append(f"{self.field}.importance={importance!r}: allowed: {list(IMPORTANCE)}")
        super().__init__(
            problems, schedule, sparsity, start_step, end_step, every, initial_sparsity, calibration_batches, restart_schedule
        )
        self.importance = importance

    def settings(self) -> dict[str, Any]:
        return {
            "structure": self.structure, "criterion": self.importance, "sparsity": self.schedule.sparsity,
            "schedule": self.schedule.kind, "start_step": self.schedule.start_step,
            "end_step": self.schedule.end_step, "every": self.schedule.every,
        }


class FeedForwardPruning(_StructuredPruning):
    """Structured pruning of FFN neurons: ``sparsity`` of each layer's intermediate neurons are
    switched off (the same number in every layer) by their importance on calibration batches
    (:mod:`distill.pruning.structured`); at the end of the run they are removed, so the exported
    student is dense, smaller, and loads with ``from_pretrained`` (its config's
    ``intermediate_size`` is the kept width).

    Args: ``sparsity``, ``schedule``, ``start_step``, ``end_step``, ``every``,
        ``initial_sparsity``, ``calibration_batches`` as in :class:`~distill.callbacks.Pruning`;
        importance: ``activation`` (RMS activation of the neuron over the calibration tokens) or
            ``gradient`` (first-order Taylor: ``Σ_x |Σ_t a·∂L/∂a|`` on the labelled calibration batches).
    """

    method = "prune-ffn"
    structure = "ffn_neurons"

    def describe(self) -> str:
        return f"FFN neurons {self.schedule.sparsity:.0%} ({self.importance})"

    def model_problems(self, student: nn.Module) -> list[str]:
        from distill.pruning.structured import feed_forwards

        try:
            feed_forwards(student)
        except ValueError as error:
            return [f"{self.field}: FFN pruning cannot find the student's feed-forward layers: {error}"]
        return []

    def compute_masks(self, student: nn.Module, calibration: Calibration, sparsity: float) -> dict[str, torch.Tensor]:
        from distill.pruning.structured import (
            feed_forwards,
            kept_neurons,
            neuron_gradient_importance,
            neuron_importance,
            neuron_masks,
        )

        ffns = feed_forwards(student)
        score = neuron_gradient_importance if self.importance == "gradient" else neuron_importance
        importance = score(student, ffns, calibration())
        masks = {}
        for ffn in ffns:
            width = importance[ffn.layer].numel()
            alive = self.masks.get(f"{ffn.down}.weight")
            kept = kept_neurons(importance[ffn.layer], kept_count(width, sparsity), None if alive is None else alive[0])
            masks.update(neuron_masks(student, ffn, kept))
        return masks

    def export(self, student: nn.Module) -> dict[str, Any]:
        from distill.pruning.structured import feed_forwards, intermediate_size, shrink_feed_forwards

        before = intermediate_size(student)
        kept = {ffn.layer: self.masks.get(f"{ffn.down}.weight")[0].cpu() for ffn in feed_forwards(student)}
        width = shrink_feed_forwards(student, kept)
        self.masks = MaskSet()  # the pruned rows and columns are gone; nothing left to mask
        log.info("FFN width %d -> %d in every layer (removed, not masked)", before, width)
        return {"intermediate_size": {"before": before, "after": width}, "physically_removed": True}


class AttentionHeadPruning(_StructuredPruning):
    """Structured pruning of attention heads: ``sparsity`` of each layer's heads are switched off
    (the same number in every layer; with grouped keys and values, in every group) by their
    importance on calibration batches (:mod:`distill.pruning.heads`). At the end of the run a
    student whose config has ``head_dim`` (Llama-style) loses the heads' rows and columns and
    exports with the smaller ``num_attention_heads``; a BERT student keeps the heads, masked to
    zero, and ``metrics.json`` says so (``physically_removed: false`` and why).

    Composes with FFN or unstructured pruning (``compress=[prune_ffn,prune_heads]``): this node
    sits under ``compress.prune_heads``.

    Args: as :class:`FeedForwardPruning`; importance ``gradient`` is Michel et al. (2019)'s
        ``Σ_x |∂L/∂ξ_h|`` for a gate ``ξ_h`` on each head.
    """

    method = "prune-heads"
    structure = "attention_heads"
    field = HEADS_FIELD

    def describe(self) -> str:
        return f"attention heads {self.schedule.sparsity:.0%} ({self.importance})"

    def model_problems(self, student: nn.Module) -> list[str]:
        from distill.pruning.heads import attention_blocks, heads_kept

        try:
            block = attention_blocks(student)[0]
        except ValueError as error:
            return [f"{self.field}: head pruning cannot find the student's attention heads: {error}"]
        keep = heads_kept(block, self.schedule.sparsity)
        unit = "heads" if block.kv_heads == block.heads else f"query heads in each of {block.kv_heads} key/value groups"
        count = block.heads if block.kv_heads == block.heads else block.group
        if keep == 0 or keep == block.heads:
            what = "no head at all" if keep == 0 else "every head"
            return [
                f"{self.field}.sparsity={self.schedule.sparsity!r}: keeps {what} of {count} {unit}; "
                f"choose a sparsity that prunes 1 to {count - 1} of them"
            ]
        return []

    def compute_masks(self, student: nn.Module, calibration: Calibration, sparsity: float) -> dict[str, torch.Tensor]:
        from distill.pruning.heads import alive_heads, attention_blocks, head_importance, head_masks, heads_kept, kept_heads

        blocks = attention_blocks(student)
        importance = head_importance(student, blocks, calibration(), self.importance)
        masks = {}
        for block in blocks:
            kept = kept_heads(block, importance[block.layer], heads_kept(block, sparsity), alive_heads(self.masks, block))
            masks.update(head_masks(student, block, kept))
        return masks

    def export(self, student: nn.Module) -> dict[str, Any]:
        from distill.pruning.heads import alive_heads, attention_blocks, removable, shrink_attention_heads

        blocks = attention_blocks(student)
        kept = {block.layer: alive_heads(self.masks, block).cpu() for block in blocks}
        heads = {"before": blocks[0].heads, "after": int(next(iter(kept.values())).sum())}
        reason = removable(student)
        if reason is not None:
            log.warning("attention heads %d -> %d masked, not removed: %s", heads["before"], heads["after"], reason)
            return {"attention_heads": heads, "physically_removed": False, "not_removed_because": reason}
        shrink_attention_heads(student, kept)
        self.masks = MaskSet()  # the pruned rows and columns are gone; nothing left to mask
        log.info("attention heads %d -> %d in every layer (removed, not masked)", heads["before"], heads["after"])
        return {"attention_heads": heads, "physically_removed": True}

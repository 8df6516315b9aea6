r"""Depth pruning: which whole layers a shallower student keeps, ranked by Block Influence.

A layer that barely changes its input can go. Block Influence (Men et al. 2024, "ShortGPT: Layers in
Large Language Models are More Redundant Than You Expect", arXiv:2403.03853; the depth criterion
Minitron compares, Muralidharan et al. 2024) scores layer :math:`i` by how far its output turns
away from its input, over the real (non-padding) tokens :math:`t` of calibration batches:

.. math::
    BI_i = 1 - \mathbb{E}_{x, t}\left[\frac{h_{i,t}^\top h_{i+1,t}}{\lVert h_{i,t}\rVert \, \lVert h_{i+1,t}\rVert}\right]

with :math:`h_0` the embedding output and :math:`h_{i+1}` layer :math:`i`'s output (the model's
``output_hidden_states``). The student keeps the ``keep`` layers of highest influence, in their
order, and is built from them as a layer-copy student (``student.init_from_teacher_layers``): the
removed layers are gone from the start, so the export is the physically smaller model the stock
config describes (``num_hidden_layers = keep``).

``student.layer_choice=block_influence`` picks the layers this way instead of the listed ones
(as many as ``init_from_teacher_layers`` lists), on ``student.layer_choice_batches`` batches of the
run's training data (the same examples for every seed and rank: a fixed random sample), with the
model the layers are copied from (the teacher, or ``init_source``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from distill.calibration import calibrating, model_inputs
from distill.models import ModelSpec, build_model

log = logging.getLogger(__name__)


def block_influence(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> torch.Tensor:
    """:math:`BI_i` of every layer of ``model`` ``(num_layers,)``, averaged over the real tokens of
    ``batches`` (eval mode, no gradients)."""
    total, tokens = None, 0
    with calibrating(model) as device, torch.no_grad():
        for batch in batches:
            inputs = model_inputs(batch, device)
            hidden = model(**inputs, output_hidden_states=True).hidden_states
            real = inputs["attention_mask"].bool()
            cosines = torch.stack([
                torch.nn.functional.cosine_similarity(before.float(), after.float(), dim=-1)[real]
                for before, after in zip(hidden[:-1], hidden[1:])
            ])  # (layers, real tokens)
            total = cosines.sum(1) if total is None else total + cosines.sum(1)
            tokens += int(real.sum())
    if total is None or tokens == 0:
        raise ValueError("block influence needs at least one calibration batch with real tokens")
    return 1.0 - total / tokens


def most_influential_layers(influence: torch.Tensor, keep: int) -> list[int]:
    """The ``keep`` layers of highest influence, in layer order (ties: the earlier layer)."""
    if not 1 <= keep <= influence.numel():
        raise ValueError(f"keep={keep}: choose between 1 and the model's {influence.numel()} layers")
    order = sorted(range(influence.numel()), key=lambda layer: (-float(influence[layer]), layer))
    return sorted(order[:keep])


def calibration_batches(datamodule, batches: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """``batches`` batches of the training split, the same for every seed and rank: a sample drawn
    with a fixed generator, padded by the data module's own collator."""
    dataset, _ = datamodule.teacher_cache_splits()["train"]
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[: batches * batch_size].tolist()
    collate = datamodule.collator()
    for start in range(0, len(order), batch_size):
        yield collate([dataset[index] for index in order[start : start + batch_size]])


def choose_student_layers(
    spec: ModelSpec, teacher: nn.Module | None, datamodule, num_labels: int, task: str, batch_size: int
) -> tuple[ModelSpec, dict[str, Any]]:
    """``spec`` with ``init_from_teacher_layers`` replaced by the layers Block Influence keeps (as
    many as it lists) and what was measured: ``{"layers", "block_influence", "source"}``."""
    if spec.init_source:
        source, _ = build_model(ModelSpec(name_or_path=spec.init_source), num_labels, task=task)
    else:
        source = teacher
    influence = block_influence(source, calibration_batches(datamodule, spec.layer_choice_batches, batch_size))
    layers = most_influential_layers(influence, len(spec.init_from_teacher_layers))
    log.info("student layers by block influence: %s of %s (influence %s)", layers, spec.init_source or "the teacher",
             ", ".join(f"{value:.4f}" for value in influence.tolist()))
    chosen = dataclasses.replace(spec, init_from_teacher_layers=layers, layer_choice="listed")
    return chosen, {"layers": layers, "block_influence": [round(value, 6) for value in influence.tolist()],
                    "source": spec.init_source or "teacher"}


__all__ = ["block_influence", "calibration_batches", "choose_student_layers", "most_influential_layers"]

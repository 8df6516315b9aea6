"""One pass of the frozen teacher over a tokenized split, writing its logits row by row (and, with
``teacher_cache.hidden_layers``, the chosen layers' hidden states of each non-padding token), or for
a token-level teacher the top-k and tail of every scored position (:func:`teacher_top_k_pass`).

The pass batches examples by length (longest first: a batch too big for memory fails at once, and
padding is minimal), runs the teacher in eval mode under ``torch.inference_mode`` and writes each
example's logits at its ``example_index`` row. Its batches differ from training's, so a cached
logit equals the online teacher's up to float32 summation order (about 1e-6), not bit for bit,
unless the cache was built in the run's own batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from distill.losses.base import next_token_positions
from distill.losses.topk import tail_logsumexp
from distill.teacher_cache.hidden_states import HiddenStatesSplit
from distill.teacher_cache.identity import NON_INPUT_COLUMNS
from distill.teacher_cache.store import TokenTopKSplit

log = logging.getLogger(__name__)


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Example indices in batches of ``batch_size``, longest examples first."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[start : start + batch_size].tolist() for start in range(0, len(order), batch_size)]


def teacher_logits_pass(
    teacher: nn.Module,
    dataset: Dataset,
    lengths: Sequence[int],
    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    out: np.ndarray,
    *,
    batch_size: int,
    split: str,
    hidden: HiddenStatesSplit | None = None,
) -> None:
    """Fill ``out`` (``(N, C)``) with the teacher's logits: row ``i`` = example ``example_index == i``;
    with ``hidden``, also its layers' hidden states of each example's non-padding tokens
    (the teacher runs with ``output_hidden_states``)."""
    device = next(teacher.parameters()).device
    teacher.eval()
    batches = length_batches(lengths, batch_size)
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate)
    done, report_every = 0, max(1, len(batches) // 10)
    with torch.inference_mode():
        for number, batch in enumerate(loader, start=1):
            rows = batch["example_index"].numpy()
            inputs = {key: value.to(device) for key, value in batch.items() if key not in NON_INPUT_COLUMNS}
            output = teacher(**inputs, output_hidden_states=hidden is not None)
            out[rows] = output.logits.float().cpu().numpy().astype(out.dtype, copy=False)
            if hidden is not None:
                hidden.write(rows, inputs["attention_mask"], output.hidden_states)
            done += len(rows)
            if number % report_every == 0 or number == len(batches):
                log.info("teacher cache: %s split %d/%d examples", split, done, len(lengths))


def _rows_per_example(dataset: Dataset, collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
                      count: Callable[[dict[str, torch.Tensor]], torch.Tensor], batch_size: int) -> list[int]:
    """``count(batch)`` (``(B,)``) of every example once collated, by ``example_index``."""
    counts = [0] * len(dataset)
    batches = [list(range(start, min(start + batch_size, len(dataset)))) for start in range(0, len(dataset), batch_size)]
    for batch in DataLoader(dataset, batch_sampler=batches, collate_fn=collate):
        for row, rows in zip(batch["example_index"].tolist(), count(batch).tolist()):
            counts[row] = int(rows)
    return counts


def tokens_per_example(dataset: Dataset, collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
                       batch_size: int = 256) -> list[int]:
    """How many non-padding tokens (``attention_mask == 1`` once collated) each example has, by
    ``example_index``: the hidden-state rows a cache gives it."""
    return _rows_per_example(dataset, collate, lambda batch: batch["attention_mask"].sum(1), batch_size)


def scored_positions_per_example(dataset: Dataset, collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
                                 batch_size: int = 256) -> list[int]:
    """How many positions of each example a causal-LM loss scores (``next_token_positions`` of its
    collated labels), by ``example_index``: the rows a token-level cache gives it."""
    return _rows_per_example(dataset, collate, lambda batch: next_token_positions(batch["labels"]).sum(1), batch_size)


def teacher_top_k_pass(
    teacher: nn.Module,
    dataset: Dataset,
    lengths: Sequence[int],
    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    out: TokenTopKSplit,
    *,
    batch_size: int,
    vocab_size: int,
    split: str,
) -> None:
    """Fill ``out`` with a causal LM teacher's top-k logits (raw), their token ids and the tail's
    log-sum-exp at each of ``out.temperatures``, for every scored position of every example (the
    logits at ``t`` that predict label ``t + 1``, as :meth:`~distill.losses.LossInputs.for_next_tokens`
    selects them), over the first ``vocab_size`` logits."""
    device = next(teacher.parameters()).device
    teacher.eval()
    k = out.values.shape[1]
    batches = length_batches(lengths, batch_size)
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate)
    done, report_every = 0, max(1, len(batches) // 10)
    with torch.inference_mode():
        for number, batch in enumerate(loader, start=1):
            inputs = {key: value.to(device) for key, value in batch.items() if key not in NON_INPUT_COLUMNS}
            logits = teacher(**inputs).logits[:, :-1, :vocab_size]
            positions = next_token_positions(batch["labels"]).to(device)
            for example, scored, rows in zip(batch["example_index"].tolist(), positions, logits):
                start, stop = int(out.offsets[example]), int(out.offsets[example + 1])
                selected = rows[scored].float()  # (n, V), the example's scored positions in order
                if selected.size(0) != stop - start:
                    raise RuntimeError(f"example {example}: {selected.size(0)} scored positions, {stop - start} counted")
                values, indices = selected.topk(k, dim=-1)
                out.values[start:stop] = values.cpu().numpy().astype(out.values.dtype, copy=False)
                out.indices[start:stop] = indices.cpu().numpy().astype(out.indices.dtype, copy=False)
                for column, temperature in enumerate(out.temperatures):
                    out.tails[start:stop, column] = tail_logsumexp(selected, indices, temperature).cpu().numpy()
            done += len(batch["example_index"])
            if number % report_every == 0 or number == len(batches):
                log.info("teacher cache: %s split %d/%d examples (top-%d)", split, done, len(lengths), k)

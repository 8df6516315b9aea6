"""One pass of the frozen teacher over a tokenized split, writing its logits row by row.

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

from distill.teacher_cache.identity import NON_INPUT_COLUMNS

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
) -> None:
    """Fill ``out`` (``(N, C)``) with the teacher's logits: row ``i`` = example ``example_index == i``."""
    device = next(teacher.parameters()).device
    teacher.eval()
    batches = length_batches(lengths, batch_size)
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate)
    done, report_every = 0, max(1, len(batches) // 10)
    with torch.inference_mode():
        for number, batch in enumerate(loader, start=1):
            rows = batch["example_index"].numpy()
            inputs = {key: value.to(device) for key, value in batch.items() if key not in NON_INPUT_COLUMNS}
            logits = teacher(**inputs).logits
            out[rows] = logits.float().cpu().numpy().astype(out.dtype, copy=False)
            done += len(rows)
            if number % report_every == 0 or number == len(batches):
                log.info("teacher cache: %s split %d/%d examples", split, done, len(lengths))

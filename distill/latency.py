"""CPU latency that can be compared: the models timed in interleaved rounds in one process.

Timing the teacher, then the student, lets whatever else the machine does in between land on one
of them (one quickstart printed a 0.54x "speed-up" that way). Here every round times each model
once, in an order that rotates from round to round, with a fixed thread count, and the result is
the median over rounds with its spread (the interquartile range). Each call is timed with
``torch.utils.benchmark.Timer``, which synchronises CUDA and sets the thread count.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch
from torch import nn
from torch.utils import benchmark


def _forward(model: nn.Module, inputs: dict[str, torch.Tensor]) -> None:
    model(**inputs)


def interleaved_latency(
    models: dict[str, nn.Module],
    inputs: dict[str, torch.Tensor],
    rounds: int = 20,
    warmup: int = 3,
    threads: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Per model: ``median_ms`` and ``iqr_ms`` of one eval-mode forward over ``inputs`` (``rounds``
    interleaved rounds after ``warmup``), and the ``threads`` used (default: torch's current count)."""
    threads = threads or torch.get_num_threads()
    names = list(models)
    modes = {name: model.training for name, model in models.items()}
    timers = {
        name: benchmark.Timer(
            stmt="forward(model, inputs)",
            globals={"forward": _forward, "model": model.eval(), "inputs": inputs},
            num_threads=threads,
        )
        for name, model in models.items()
    }
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for index in range(warmup + rounds):
            order = names[index % len(names):] + names[: index % len(names)]
            for name in order:
                seconds = timers[name].timeit(number=1).times[0]
                if index >= warmup:
                    times[name].append(seconds * 1000.0)
    for name, model in models.items():
        model.train(modes[name])
    return {name: _summary(values, threads) for name, values in times.items()}


def _summary(values: list[float], threads: int) -> dict[str, Any]:
    quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {
        "median_ms": statistics.median(values),
        "iqr_ms": quartiles[2] - quartiles[0],
        "rounds": len(values),
        "threads": threads,
    }

"""Learning-rate schedules that start over: the run's warm-up + decay, once per segment of the run.

A student compressed in one shot at step ``s`` (pruned, or switched to fake-quant) recovers from
there under what is left of the schedule; with a linear decay over ``N`` steps that is at most
``lr·(N − s)/N`` and falling. *Learning-rate rewinding* (Renda, Frankle & Carbin 2020, "Comparing
Rewinding and Fine-tuning in Neural Network Pruning", arXiv:2003.02389) retrains a pruned network
under the schedule it was trained with instead, and recovers more than fine-tuning at the final
small rate. Within one budget, :func:`restarted_scheduler` splits the run at the restart steps
``0 < s₁ < … < s_k < N`` and runs the schedule over each segment ``[s_i, s_{i+1})`` as if it were
the whole run (its own warm-up, ``warmup_ratio·(s_{i+1} − s_i)`` steps, and its own decay):

    lr(t) = lr₀ · λ_{s_{i+1} − s_i}(t − s_i)   for s_i ≤ t < s_{i+1}

where ``λ_n`` is the run's schedule over ``n`` steps. The steps and the peak rate are the same as
the run's; only where the rate is spent changes. Compression callbacks ask for a restart at the
step their compression lands (``restart_schedule: true``, :attr:`DistillationModule.schedule_restarts`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from distill.errors import ConfigError


def _segment_lambda(factory: Callable[..., Any], length: int, warmup_ratio: float) -> Callable[[int], float]:
    """The run's schedule over ``length`` steps, as a function of the step within them."""
    placeholder = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = factory(optimizer=placeholder, num_warmup_steps=int(warmup_ratio * length), num_training_steps=length)
    if not isinstance(scheduler, LambdaLR) or len(scheduler.lr_lambdas) != 1:
        raise ConfigError([
            f"scheduler: restart_schedule needs a schedule given as one function of the step (a LambdaLR, as "
            f"transformers.get_scheduler makes); got {type(scheduler).__name__}. Use scheduler.name=linear "
            "(or cosine, constant_with_warmup, ...) or set the compress node's restart_schedule=false"
        ])
    return scheduler.lr_lambdas[0]


def restart_segments(total_steps: int, restarts: Iterable[int]) -> list[tuple[int, int]]:
    """``[(start, length), ...]`` covering ``[0, total_steps)``, split at the ``restarts`` inside it
    (steps at 0 or past the end split nothing)."""
    bounds = [0, *sorted({step for step in restarts if 0 < step < total_steps}), total_steps]
    return [(start, end - start) for start, end in zip(bounds, bounds[1:])]


def restarted_scheduler(
    factory: Callable[..., Any],
    optimizer: torch.optim.Optimizer,
    warmup_ratio: float,
    total_steps: int,
    restarts: Iterable[int],
) -> LambdaLR:
    """The schedule ``factory`` makes, run anew over each segment between ``restarts`` (module
    docstring). The rate function is a closure: ``LambdaLR.state_dict`` leaves it out, a resumed run
    rebuilds it from the same settings and restores the step."""
    segments = [(start, _segment_lambda(factory, length, warmup_ratio)) for start, length in restart_segments(total_steps, restarts)]

    def rate(step: int) -> float:
        start, segment = next((start, fn) for start, fn in reversed(segments) if step >= start)
        return segment(step - start)

    return LambdaLR(optimizer, rate)

"""The NaN / inf guard of training: what a non-finite loss stops (or skips), and the message naming
the step, the loss term(s) and which model's outputs were non-finite.

Why here, before the optimizer step: a NaN loss gives NaN gradients, one optimizer step with them
makes every weight NaN, and the next checkpoint would overwrite the last good one with them. The
check runs in ``training_step`` on the loss it returns, so the stop (an exception, which Lightning's
``ModelCheckpoint`` answers with no save unless ``save_on_exception=true``, and then of the weights
as they were before this step) or the skip (``training_step`` returns ``None``: Lightning runs no
backward and the optimizer sees no gradient, so no weight moves) comes first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distill.errors import NonFiniteLossError
from distill.losses import LossInputs, LossResult, ModelOutputs, TopKLogits

#: ``module.nonfinite`` values.
NONFINITE_POLICIES = ("stop", "skip")


def policy_problems(policy: object, max_skipped_batches: object) -> list[str]:
    """Config problems of ``module.nonfinite`` / ``module.max_skipped_batches`` (checked before weights load)."""
    problems = []
    if policy not in NONFINITE_POLICIES:
        problems.append(
            f"module.nonfinite={policy!r}: choose one of {list(NONFINITE_POLICIES)} (stop: end the run at a "
            "NaN/inf loss; skip: skip such batches, up to module.max_skipped_batches)"
        )
    if isinstance(max_skipped_batches, bool) or not isinstance(max_skipped_batches, int) or max_skipped_batches < 0:
        problems.append(f"module.max_skipped_batches={max_skipped_batches!r}: must be an integer >= 0")
    return problems


def _finite(tensor: torch.Tensor | None) -> bool:
    return tensor is None or not tensor.is_floating_point() or bool(torch.isfinite(tensor).all())


def nonfinite_outputs(outputs: ModelOutputs | None) -> list[str]:
    """Which of a model's outputs (``logits``, ``hidden_states[i]``, ``<captured>[i]``) hold a NaN or inf."""
    if outputs is None:
        return []
    logits = outputs.logits
    if isinstance(logits, TopKLogits):  # a cached token teacher: an empty tail is -inf, not a fault
        tail = logits.tail_logsumexp
        finite = _finite(logits.values) and not bool((tail.isnan() | (tail == float("inf"))).any())
    else:
        finite = _finite(logits)
    found = [] if finite else ["logits"]
    found += [f"hidden_states[{i}]" for i, state in enumerate(outputs.hidden_states or ()) if not _finite(state)]
    for name, tensors in (outputs.captured or {}).items():
        found += [f"{name}[{i}]" for i, tensor in enumerate(tensors) if not _finite(tensor)]
    return found


def _listed(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def describe(result: LossResult, inputs: LossInputs, per_teacher: dict[str, LossInputs]) -> str:
    """Which terms were non-finite and why: the student's, a teacher's outputs, or the labels."""
    terms = [name for name, value in result.unweighted.items() if not _finite(value)]
    parts = [f"term(s) {', '.join(terms)}" if terms else "the total (every term finite)"]
    sides = {"student": nonfinite_outputs(inputs.student)}
    if per_teacher:  # several teachers: each by name (the combined teacher derives from them)
        sides.update({f"teacher {name!r}": nonfinite_outputs(each.teacher) for name, each in per_teacher.items()})
    else:
        sides["teacher"] = nonfinite_outputs(inputs.teacher)
    bad = [f"the {side}'s outputs ({_listed(found)})" for side, found in sides.items() if found]
    if not _finite(inputs.labels):
        bad.append("the labels")
    checked = ", ".join(side for side in sides if side != "teacher" or inputs.teacher is not None)
    if bad:
        parts.append("non-finite: " + "; ".join(bad))
    else:
        parts.append(f"the outputs of {checked} are finite (the loss computation itself overflowed)")
    return "; ".join(parts)


@dataclass
class NonFiniteGuard:
    """Checks each training step's loss; ``policy`` ``stop`` raises at the first non-finite loss,
    ``skip`` skips up to ``max_skipped_batches`` such batches (in the whole run) and raises at the next.

    Attributes:
        skipped: batches skipped so far (restored on resume through the module's checkpoint).
    """

    policy: str = "stop"
    max_skipped_batches: int = 0
    skipped: int = 0

    def __post_init__(self) -> None:
        problems = policy_problems(self.policy, self.max_skipped_batches)
        if problems:
            raise ValueError("; ".join(problems))

    def check(
        self, result: LossResult, inputs: LossInputs, per_teacher: dict[str, LossInputs], step: int, where: str
    ) -> bool:
        """``True`` when the loss is finite; ``False`` for a batch to skip; raises
        :class:`NonFiniteLossError` when the run must stop. ``step``: optimizer steps done so far
        (``trainer.global_step``); ``where``: e.g. ``epoch 0, batch 3``."""
        if _finite(result.total):
            return True
        detail = describe(result, inputs, per_teacher)
        if self.policy == "skip" and self.skipped < self.max_skipped_batches:
            self.skipped += 1
            return False
        if self.policy == "skip":
            budget = (
                f"more than module.max_skipped_batches={self.max_skipped_batches} batches had a non-finite loss "
                f"({self.skipped} skipped before this one). Raise the budget if a few bad batches are expected"
            )
        else:
            budget = "To skip a few such batches instead: module.nonfinite=skip module.max_skipped_batches=N"
        raise NonFiniteLossError(
            f"non-finite loss at training step {step} ({where}): {detail}. Stopped before the optimizer "
            f"step, so no weight took this loss and no checkpoint was written after it: the last one saved "
            f"(checkpoints/last.ckpt, if any) holds finite weights. "
            f"Usual fixes: a lower optimizer.lr, gradient clipping (trainer.gradient_clip_val=1.0), "
            f"fp32 instead of fp16 (trainer.precision=32), or check the data of this batch. {budget}."
        )

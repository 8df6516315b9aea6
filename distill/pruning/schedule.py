"""When a pruning run prunes, and how much: one-shot at a step, gradual (Zhu & Gupta 2017), or
after training (no retraining: the one-shot baseline).

Gradual pruning ("To prune, or not to prune", Zhu & Gupta 2017, arXiv:1710.01878) raises the
sparsity from ``s_i`` at step ``t₀`` to ``s_f`` at step ``t₀ + nΔt`` along a cubic,

    s_t = s_f + (s_i − s_f) · (1 − (t − t₀) / (nΔt))³,

fast at first, while many weights are redundant, then slowly, with the mask updated every ``Δt``
steps (``every``) and, at ``end_step``, at the target. After ``end_step`` the masked student keeps
training (recovery under the teacher).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The schedules: prune once at ``start_step``, gradually from ``start_step`` to ``end_step``, or
#: once after training (the student ships pruned without any retraining).
SCHEDULES = ("one_shot", "gradual", "after_training")


def cubic_sparsity(step: int, initial: float, final: float, start: int, end: int) -> float:
    """Zhu & Gupta's sparsity at ``step``: ``initial`` before ``start``, ``final`` from ``end`` on."""
    if step < start:
        return initial
    if step >= end:
        return final
    remaining = 1.0 - (step - start) / (end - start)
    value = final + (initial - final) * remaining**3
    return min(final, max(initial, value))  # rounding never steps outside [initial, final]


@dataclass(frozen=True)
class SparsitySchedule:
    """The sparsity a run's masks have at each optimizer step, and the steps the masks change."""

    kind: str = "gradual"
    sparsity: float = 0.5
    start_step: int = 0
    end_step: int = 0
    every: int = 10
    initial_sparsity: float = 0.0

    def target(self, step: int) -> float:
        """The sparsity the masks have from ``step`` on (0 before pruning starts)."""
        if self.kind == "after_training" or step < self.start_step:
            return 0.0
        if self.kind == "one_shot":
            return self.sparsity
        return cubic_sparsity(step, self.initial_sparsity, self.sparsity, self.start_step, self.end_step)

    def updates_at(self, step: int) -> bool:
        """Whether the masks are recomputed before ``step``'s forward pass."""
        if self.kind == "after_training" or step < self.start_step:
            return False
        if self.kind == "one_shot":
            return step == self.start_step
        if step >= self.end_step:
            return step == self.end_step
        return (step - self.start_step) % self.every == 0

    def pending(self, step: int, last_update: int | None) -> bool:
        """Whether the masks should be recomputed at ``step``, given the step they last were:
        a resumed or late-starting run (``step`` past an update step it never ran) catches up."""
        if self.kind == "after_training" or step < self.start_step:
            return False
        if last_update is None:
            return True
        if last_update >= step:
            return False
        return any(self.updates_at(s) for s in range(last_update + 1, step + 1))

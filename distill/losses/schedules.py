"""Schedules for loss weights and the temperature over training progress (0 = first step, 1 = last)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SCHEDULE_KINDS = ("constant", "linear", "cosine", "step")


@dataclass
class Schedule:
    r"""A value as a function of training progress :math:`p \in [0, 1]`.

    - ``constant``: ``start``.
    - ``linear``: :math:`s + (e - s)\,p`.
    - ``cosine``: :math:`e + (s - e)\,\frac{1 + \cos(\pi p)}{2}` (from ``start`` to ``end``).
    - ``step``: ``start`` until the first of ``milestones`` (progress fractions), then the
      matching entry of ``values``.

    Progress is ``global_step / total_steps``, so a schedule means the same under any budget.
    """

    kind: str = "constant"
    start: float = 1.0
    end: float | None = None
    milestones: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.milestones = [float(m) for m in self.milestones]
        self.values = [float(v) for v in self.values]
        problems = []
        if self.kind not in SCHEDULE_KINDS:
            problems.append(f"kind={self.kind!r} is not one of {list(SCHEDULE_KINDS)}")
        if self.kind in ("linear", "cosine") and self.end is None:
            problems.append(f"kind={self.kind!r} needs `end`")
        if self.kind == "step":
            if len(self.milestones) != len(self.values) or not self.milestones:
                problems.append("kind='step' needs milestones and values of equal, non-zero length")
            if sorted(self.milestones) != self.milestones or not all(0 <= m <= 1 for m in self.milestones):
                problems.append(f"milestones={self.milestones} must rise within [0, 1] (fractions of training)")
        if problems:
            raise ValueError("; ".join(problems))

    def __call__(self, progress: float) -> float:
        progress = min(max(progress, 0.0), 1.0)
        if self.kind == "constant":
            return self.start
        if self.kind == "linear":
            return self.start + (self.end - self.start) * progress
        if self.kind == "cosine":
            return self.end + (self.start - self.end) * (1 + math.cos(math.pi * progress)) / 2
        value = self.start
        for milestone, milestone_value in zip(self.milestones, self.values):
            if progress >= milestone:
                value = milestone_value
        return value

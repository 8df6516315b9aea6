"""The error of a refused run config: every problem, one per line."""

from __future__ import annotations


class ConfigError(ValueError):
    """Every problem found in a run's config, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the run config:\n{lines}")

"""The one error class for bad input found before training: a config, data or model problem.

:class:`ConfigError` carries ``problems`` (one message per problem, each naming the field, the value,
what is allowed and the fix). The data and model errors are its subclasses, so the CLI catches one
class, prints the problems and exits with status 2, never a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence


class ConfigError(ValueError):
    """Every problem found in a run's input, one per line.

    Args:
        problems: one message per problem.

    Attributes:
        problems: the messages, in the order they were found.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        return f"{len(self.problems)} problem(s) in the run config:\n{lines}"

    def __reduce__(self) -> tuple[type, tuple[list[str]]]:
        return type(self), (self.problems,)

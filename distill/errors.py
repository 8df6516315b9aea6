"""The run's own error classes, each caught by the CLI, which prints the message, never a traceback.

:class:`ConfigError`, for bad input found before training (a config, data or model problem), carries
``problems`` (one message per problem, each naming the field, the value, what is allowed and the
fix); the data and model errors are its subclasses, and the CLI exits with status 2.
:class:`NonFiniteLossError` is a failure during training (status 3): the run folder is kept.
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


class NonFiniteLossError(RuntimeError):
    """A training step's loss was NaN or inf (see :mod:`distill.nonfinite`).

    The message names the step, the non-finite loss terms and whose outputs were non-finite. Not a
    :class:`ConfigError`: the input was valid, the run failed during training, and its folder (logs,
    the last good checkpoint) is kept.
    """

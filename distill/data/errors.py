"""The error every data module raises for bad data config or data: all problems at once."""

from __future__ import annotations

from collections.abc import Sequence


class DataConfigError(ValueError):
    """The data config does not match the data. Lists every problem found, not just the first.

    Args:
        problems: one message per problem; each names the config field, the bad value, the
            allowed values and the fix.

    Attributes:
        problems: the messages, in the order they were found.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        lines = [f"Invalid data configuration ({count} problem{'' if count == 1 else 's'}):"]
        lines += [f"  {i}. {problem}" for i, problem in enumerate(self.problems, start=1)]
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[type, tuple[list[str]]]:
        return type(self), (self.problems,)

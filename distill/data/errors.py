"""The error every data module raises for bad data config or data: all problems at once."""

from __future__ import annotations

from distill.errors import ConfigError


class DataConfigError(ConfigError):
    """The data config does not match the data. Lists every problem found, not just the first.

    Args:
        problems: one message per problem; each names the config field, the bad value, the
            allowed values and the fix.

    Attributes:
        problems: the messages, in the order they were found.
    """

    def render(self) -> str:
        count = len(self.problems)
        lines = [f"Invalid data configuration ({count} problem{'' if count == 1 else 's'}):"]
        lines += [f"  {i}. {problem}" for i, problem in enumerate(self.problems, start=1)]
        return "\n".join(lines)

"""The run's own error classes, each caught by the CLI, which prints the message, never a traceback.

:class:`ConfigError`, for bad input found before training (a config, data or model problem), carries
``problems`` (one message per problem, each naming the field, the value, what is allowed and the
fix); the data and model errors are its subclasses, and the CLI exits with status 2.
:class:`NonFiniteLossError` is a failure during training (status 3): the run folder is kept.
:class:`Preempted` is a run stopped by SIGTERM (or SIGUSR1 under SLURM) after it saved a checkpoint
(status :data:`PREEMPTED_EXIT`, 143).
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


#: Exit status of a run stopped by SIGTERM (or SIGUSR1 under SLURM): 128 + 15, the shell's
#: convention for "terminated by SIGTERM"; distinct from 2 (bad input) and 3 (non-finite loss).
PREEMPTED_EXIT = 143


class Preempted(RuntimeError):
    """A run stopped by SIGTERM (or SIGUSR1 under SLURM) during training, after saving a checkpoint.

    Attributes:
        step: the global step the checkpoint holds.
        checkpoint: the full checkpoint written at that step (None when none could be written).
        stage: the stage that was training (None for a run without stages).
    """

    def __init__(self, step: int, checkpoint: str | None, stage: str | None = None) -> None:
        self.step, self.checkpoint, self.stage = step, checkpoint, stage
        where = f" in stage {stage!r}" if stage else ""
        if checkpoint:
            saved = f"saved a full checkpoint at step {step}: {checkpoint}"
        elif step == 0:
            saved = "nothing was trained yet, so no checkpoint was written"
        else:
            saved = f"no checkpoint written (trainer.enable_checkpointing=false): steps 1..{step} are lost"
        super().__init__(f"stopped by a termination signal at step {step}{where}; {saved}")

    def __reduce__(self):
        return type(self), (self.step, self.checkpoint, self.stage)

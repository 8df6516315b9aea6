"""Training callbacks, one per file."""

from distill.callbacks.preemption import PreemptionCheckpoint
from distill.callbacks.progress import StepProgressBar

__all__ = ["PreemptionCheckpoint", "StepProgressBar"]

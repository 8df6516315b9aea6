"""Training callbacks, one per file."""

from distill.callbacks.progress import StepProgressBar

__all__ = ["StepProgressBar"]

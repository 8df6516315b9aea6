"""Training callbacks, one per file."""

from distill.callbacks.preemption import PreemptionCheckpoint
from distill.callbacks.progress import StepProgressBar
from distill.callbacks.quantization import (
    PostTrainingQuantization,
    QuantizationAwareTraining,
    StudentCompression,
)

__all__ = [
    "PostTrainingQuantization",
    "PreemptionCheckpoint",
    "QuantizationAwareTraining",
    "StepProgressBar",
    "StudentCompression",
]

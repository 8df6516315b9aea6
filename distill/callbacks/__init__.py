"""Training callbacks, one per file."""

from distill.callbacks.preemption import PreemptionCheckpoint
from distill.callbacks.progress import StepProgressBar
from distill.callbacks.pruning import FeedForwardPruning, Pruning
from distill.callbacks.compression import StudentCompression
from distill.callbacks.quantization import PostTrainingQuantization, QuantizationAwareTraining
from distill.callbacks.timing import StepTimes

__all__ = [
    "FeedForwardPruning",
    "PostTrainingQuantization",
    "PreemptionCheckpoint",
    "Pruning",
    "QuantizationAwareTraining",
    "StepProgressBar",
    "StepTimes",
    "StudentCompression",
]

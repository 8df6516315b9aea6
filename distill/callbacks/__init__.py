"""Training callbacks, one per file."""

from distill.callbacks.preemption import PreemptionCheckpoint
from distill.callbacks.progress import StepProgressBar
from distill.callbacks.pruning import Pruning
from distill.callbacks.compression import StudentCompression
from distill.callbacks.quantization import PostTrainingQuantization, QuantizationAwareTraining
from distill.callbacks.structured_pruning import AttentionHeadPruning, FeedForwardPruning
from distill.callbacks.timing import StepTimes

__all__ = [
    "AttentionHeadPruning",
    "FeedForwardPruning",
    "PostTrainingQuantization",
    "PreemptionCheckpoint",
    "Pruning",
    "QuantizationAwareTraining",
    "StepProgressBar",
    "StepTimes",
    "StudentCompression",
]

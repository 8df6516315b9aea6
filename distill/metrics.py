"""Evaluation metrics by name (torchmetrics), chosen per task in config (``module.metrics``)."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassMatthewsCorrCoef,
)
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

CLASSIFICATION_METRICS = ("accuracy", "f1", "matthews")
REGRESSION_METRICS = ("pearson", "spearman")


def allowed_metrics(num_labels: int) -> tuple[str, ...]:
    return REGRESSION_METRICS if num_labels == 1 else CLASSIFICATION_METRICS


def metric_problem(names: list[str], num_labels: int) -> str | None:
    """The error for metric names not available for this task, or ``None``."""
    allowed = allowed_metrics(num_labels)
    unknown = [name for name in names if name not in allowed]
    if not unknown:
        return None
    return f"module.metrics: {unknown} not available for num_labels={num_labels}; choose from {list(allowed)}"


def build_metrics(names: list[str], num_labels: int) -> MetricCollection:
    """A ``MetricCollection`` of the named metrics.

    Classification (``num_labels >= 2``): ``accuracy``; ``f1`` (of the positive class when binary,
    as GLUE reports MRPC; macro otherwise); ``matthews`` (CoLA). Regression (``num_labels == 1``):
    ``pearson``, ``spearman`` (STS-B).
    """
    problem = metric_problem(names, num_labels)
    if problem:
        raise ValueError(problem)
    factories = {
        "accuracy": lambda: MulticlassAccuracy(num_classes=num_labels, average="micro"),
        "f1": lambda: BinaryF1Score()
        if num_labels == 2
        else MulticlassF1Score(num_classes=num_labels, average="macro"),
        "matthews": lambda: MulticlassMatthewsCorrCoef(num_classes=num_labels),
        "pearson": PearsonCorrCoef,
        "spearman": SpearmanCorrCoef,
    }
    return MetricCollection({name: factories[name]() for name in names})

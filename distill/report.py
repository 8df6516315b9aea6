"""The end-of-run report: size, quality and CPU latency of teacher and student, as a table and JSON."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn


def measure_latency(
    model: nn.Module, inputs: dict[str, torch.Tensor], repeats: int = 20, warmup: int = 3
) -> float:
    """Median wall time of one eval-mode forward pass over ``inputs``, in milliseconds."""
    was_training = model.training
    model.eval()
    timings = []
    with torch.inference_mode():
        for step in range(warmup + repeats):
            start = time.perf_counter()
            model(**inputs)
            if step >= warmup:
                timings.append((time.perf_counter() - start) * 1000.0)
    model.train(was_training)
    return statistics.median(timings)


def compare(teacher: dict[str, Any] | None, student: dict[str, Any], metric: str) -> dict[str, Any]:
    """``metrics.json``: both models' figures, the student's retention of ``metric`` and speed-up."""
    result: dict[str, Any] = {"metric": metric, "student": student}
    if teacher is not None:
        result["teacher"] = teacher
        if teacher.get(metric) and student.get(metric) is not None:
            result["retention"] = student[metric] / teacher[metric]
        if student.get("latency_ms"):
            result["speedup"] = teacher["latency_ms"] / student["latency_ms"]
        result["compression"] = teacher["params"] / student["params"]
    return result


def render_table(summary: dict[str, Any], console: Console | None = None) -> None:
    """Print ``summary`` (as from :func:`compare`) as a rich table."""
    metric = summary["metric"]
    # Several teachers: one row each, then the ensemble (the reference: ``summary["teacher"]``).
    rows = [(f"teacher {name}", figures) for name, figures in (summary.get("teachers") or {}).items()]
    rows += [("ensemble" if rows else "teacher", summary.get("teacher")), ("student", summary["student"])]
    table = Table(title=f"distillation result (dev {metric})")
    for column in ("model", "params", f"dev {metric}", "CPU latency / batch", "speed-up", "retention"):
        table.add_column(column, justify="right")
    for name, figures in rows:
        if figures is None:
            continue
        is_student = name == "student"
        if name.startswith("teacher "):
            speedup_cell = "-"  # one member of the ensemble
        elif not is_student:
            speedup_cell = "1.00x"  # the reference
        else:
            speedup_cell = f"{summary['speedup']:.2f}x" if "speedup" in summary else "-"
        table.add_row(
            name,
            f"{figures['params'] / 1e6:.1f}M",
            f"{figures[metric]:.4f}" if figures.get(metric) is not None else "-",
            f"{figures['latency_ms']:.1f} ms" if figures.get("latency_ms") else "-",
            speedup_cell,
            f"{summary['retention'] * 100:.1f}%" if is_student and "retention" in summary else "-",
        )
    (console or Console()).print(table)

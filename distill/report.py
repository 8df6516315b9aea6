"""The end-of-run report: size, quality and CPU latency of teacher and student, as a table and JSON."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


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
            _latency_cell(figures),
            speedup_cell,
            f"{summary['retention'] * 100:.1f}%" if is_student and "retention" in summary else "-",
        )
    (console or Console()).print(table)


def _latency_cell(figures: dict[str, Any]) -> str:
    """``84.4 ms ± 2.1`` (the median and the interquartile range over the interleaved rounds)."""
    if not figures.get("latency_ms"):
        return "-"
    spread = figures.get("latency_iqr_ms")
    return f"{figures['latency_ms']:.1f} ms" + (f" ± {spread:.1f}" if spread is not None else "")


#: The rows of the language-model table: (label, student key, teacher key) in ``summary["language_model"]``.
LM_ROWS = (
    ("perplexity", "student_perplexity", "teacher_perplexity"),
    ("top-1 accuracy", "student_accuracy", "teacher_accuracy"),
    ("  rarest decile", "student_accuracy_rare_decile", "teacher_accuracy_rare_decile"),
    ("  most frequent decile", "student_accuracy_frequent_decile", "teacher_accuracy_frequent_decile"),
    ("agreement with teacher", "agreement", None),
    ("  rarest decile", "agreement_rare_decile", None),
    ("  most frequent decile", "agreement_frequent_decile", None),
)


def render_language_model(summary: dict[str, Any], console: Console | None = None) -> None:
    """A causal-LM run's figures beyond perplexity (``summary["language_model"]``) and its greedy
    samples, teacher beside student; nothing for other tasks."""
    figures = summary.get("language_model")
    if not figures:
        return
    table = Table(title=f"language model on {figures['tokens']} eval tokens")
    for column in ("", "student", "teacher"):
        table.add_column(column, justify="right")

    def cell(key: str | None) -> str:
        value = figures.get(key) if key else None
        return "-" if value is None else (f"{value:.2f}" if "perplexity" in key else f"{100 * value:.1f}%")

    for label, student_key, teacher_key in LM_ROWS:
        table.add_row(label, cell(student_key), cell(teacher_key))
    console = console or Console()
    console.print(table)
    for sample in summary.get("samples") or []:
        console.print(sample["prompt"], markup=False, highlight=False, style="bold")
        for name, text in sample.items():
            if name != "prompt":  # generated text may hold [brackets]: no markup
                console.print(f"  {name:>8}: {text!r}", markup=False, highlight=False)

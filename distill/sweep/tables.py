"""A sweep summary as Markdown (settings and runs) and as CSV (one row per run)."""

from __future__ import annotations

import csv
import io

from distill.sweep.aggregate import Setting, Summary
from distill.sweep.collect import Sweep, flat_metrics, metric_value


def number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return str(int(value)) if float(value).is_integer() else f"{value:.1f}"
    return f"{value:.4f}"


def mean_std(setting: Setting) -> str:
    if setting.mean is None:
        return "-"
    return f"{number(setting.mean)} ± {number(setting.std)}"


def best_line(summary: Summary) -> str:
    """``Best setting: loss.temperature=4 (accuracy 0.8600 ± 0.0100, n=3)``."""
    best = summary.best
    if best is None:
        return "Best setting: none (no run has the metric)"
    spread = f" ± {number(best.std)}" if best.std is not None else ""
    ties = sum(1 for setting in summary.settings if setting is not best and setting.mean == best.mean)
    tied = f"; tied with {ties} other setting(s)" if ties else ""
    return f"Best setting: {best.label} ({summary.metric} {number(best.mean)}{spread}, n={best.n}{tied})"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(map(_cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]
    return lines


def settings_table(summary: Summary) -> list[str]:
    header = [*summary.setting_keys, f"{summary.metric} (mean ± std)", "n"]
    rows = []
    for setting in summary.settings:
        marker = " ★" if setting is summary.best else ""
        rows.append([*setting.values.values(), mean_std(setting) + marker, setting.n])
    return _table(header, rows)


def markdown(sweep: Sweep, summary: Summary, plot_name: str | None = "report.png") -> str:
    direction = "lower" if summary.lower_is_better else "higher"
    lines = [f"# Sweep report: `{sweep.root}`", ""]
    refused = f", {len(sweep.refused)} refused by validation" if sweep.refused else ""
    lines.append(
        f"Metric: `{summary.metric}` ({direction} is better). Runs: {len(sweep.complete)} complete, "
        f"{len(sweep.missing)} missing{refused}. Mean ± sample standard deviation (n - 1) over the runs of a setting"
        + (f"; seeds: {', '.join(summary.replicates)}." if summary.replicates else ".")
    )
    if summary.fixed:
        lines += ["", "Same in every run: " + " ".join(f"`{key}={text}`" for key, text in summary.fixed.items())]
    lines += ["", f"**{best_line(summary)}**", "", "## Settings", ""]
    lines += settings_table(summary)
    if plot_name:
        lines += ["", f"![{summary.metric} per setting]({plot_name})"]
    lines += ["", "## Runs", ""]
    header = ["run", *summary.swept, summary.metric, "status"]
    rows = []
    for run in sweep.attempted:
        values = [run.overrides[key].text if key in run.overrides else "-" for key in summary.swept]
        score = metric_value(run.metrics, summary.metric) if run.complete else None
        rows.append([run.name, *values, number(score), "ok" if run.complete else "missing"])
    lines += _table(header, rows)
    if sweep.missing:
        lines += ["", "## Missing runs", ""]
        for run in sweep.missing:
            overrides = " ".join(f"`{key}={override.text}`" for key, override in run.overrides.items())
            lines.append(f"- `{run.name}` ({overrides or 'no overrides'}): {run.problem}")
    if sweep.refused:
        lines += ["", "## Refused by validation", "", "Never trained; not part of any setting.", ""]
        for run in sweep.refused:
            overrides = " ".join(f"`{key}={override.text}`" for key, override in run.overrides.items())
            lines.append(f"- `{run.name}` ({overrides or 'no overrides'}): {run.problem}")
    return "\n".join(lines) + "\n"


def csv_text(sweep: Sweep) -> str:
    """One row per run: run, status, every override, every number of its ``metrics.json``."""
    override_keys: list[str] = []
    metric_keys: list[str] = []
    flat = {}
    for run in sweep.runs:
        override_keys.extend(key for key in run.overrides if key not in override_keys)
        flat[run.name] = flat_metrics(run.metrics) if run.complete else {}
        metric_keys.extend(key for key in flat[run.name] if key not in metric_keys)
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(["run", "status", *override_keys, *metric_keys])
    for run in sweep.runs:
        writer.writerow([
            run.name,
            "ok" if run.complete else run.problem if run.refused else f"missing: {run.problem}",
            *(run.overrides[key].text if key in run.overrides else "" for key in override_keys),
            *(flat[run.name].get(key, "") for key in metric_keys),
        ])
    return stream.getvalue()

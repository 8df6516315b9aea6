"""``report_sweep``: a sweep folder in, ``report.md``, ``report.csv`` and ``report.png`` out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distill.atomic import write_atomic
from distill.sweep.aggregate import Summary, summarize
from distill.sweep.collect import Sweep, collect
from distill.sweep.plot import plot_png
from distill.sweep.tables import csv_text, markdown


@dataclass
class SweepReport:
    sweep: Sweep
    summary: Summary
    markdown: Path
    csv: Path
    plot: Path


def report_sweep(
    sweep_dir: str | Path, metric: str | None = None, lower_is_better: bool = False, out: str | Path | None = None
) -> SweepReport:
    """Collect the runs under ``sweep_dir`` and write the three report files into ``out`` (default: ``sweep_dir``).

    ``metric``: a name from the runs' ``metrics.json`` (default: their headline metric). Raises
    :class:`~distill.sweep.SweepError` for a folder without runs or a metric no run has.
    """
    sweep = collect(sweep_dir)
    summary = summarize(sweep, metric, lower_is_better)
    out = Path(out) if out is not None else sweep.root
    plot = write_atomic(out / "report.png", plot_png(summary))
    return SweepReport(
        sweep,
        summary,
        markdown=write_atomic(out / "report.md", markdown(sweep, summary, plot_name=plot.name)),
        csv=write_atomic(out / "report.csv", csv_text(sweep)),
        plot=plot,
    )

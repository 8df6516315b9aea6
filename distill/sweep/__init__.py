"""Sweep reports: collect a ``distill -m ...`` sweep folder's runs, aggregate seeds, write tables and a plot."""

from distill.sweep.collect import SweepError
from distill.sweep.report import SweepReport, report_sweep

__all__ = ["SweepError", "SweepReport", "report_sweep"]

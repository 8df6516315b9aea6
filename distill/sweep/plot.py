"""The metric against the swept values as a PNG: mean per setting with ± std error bars, runs as dots.

One numeric swept key: it is the x axis. Two keys, one or both numeric: a numeric one is the x axis
(of two, the one with more distinct values), one line per value of the other. Anything else: one point per setting, labelled on a categorical x axis.
"""

from __future__ import annotations

import io
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from distill.sweep.aggregate import Setting, Summary, value_order


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _layout(summary: Summary, settings: list[Setting]) -> tuple[str | None, str | None]:
    """(x key, line key) for a numeric x axis, or (None, None) for a categorical one."""
    numeric = [key for key in summary.setting_keys if all(_is_number(s.typed[key]) for s in settings)]
    if len(summary.setting_keys) == 1 and numeric:
        return numeric[0], None
    if len(summary.setting_keys) == 2 and numeric:
        # The key with more distinct values spreads along x (an Optuna interval); the other makes the lines.
        x_key = max(numeric, key=lambda key: len({s.values[key] for s in settings}))
        return x_key, next(key for key in summary.setting_keys if key != x_key)
    return None, None


def _draw(axes, xs: list[float], settings: list[Setting], label: str | None, connect: bool = True) -> None:
    means = [s.mean for s in settings]
    errors = [s.std or 0.0 for s in settings]
    line = axes.errorbar(xs, means, yerr=errors, marker="o", capsize=4, label=label,
                         linestyle="-" if connect else "none")
    color = line.lines[0].get_color()
    for x, setting in zip(xs, settings):
        axes.scatter([x] * setting.n, setting.scores, s=12, alpha=0.35, color=color, zorder=3)


def plot_png(summary: Summary) -> bytes:
    """The figure as PNG bytes."""
    settings = [setting for setting in summary.settings if setting.scores]
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    x_key, line_key = _layout(summary, settings)
    best_x = None
    if x_key is None:
        xs = list(range(len(settings)))
        _draw(axes, xs, settings, None, connect=False)  # categories: no line between them
        tilt = len(settings) > 4
        axes.set_xticks(xs, [s.label for s in settings], fontsize=8, rotation=30 if tilt else 0,
                        ha="right" if tilt else "center")
        axes.set_xlabel(" ".join(summary.setting_keys) or "setting")
        if summary.best in settings:
            best_x = settings.index(summary.best)
    else:
        groups: dict[str, list[Setting]] = {}
        for setting in sorted(settings, key=lambda s: value_order(s.typed[line_key]) if line_key else (0,)):
            groups.setdefault(setting.values[line_key] if line_key else "", []).append(setting)
        for text, members in groups.items():
            members.sort(key=lambda s: s.typed[x_key])
            _draw(axes, [s.typed[x_key] for s in members], members, f"{line_key}={text}" if line_key else None)
        ticks = sorted({s.typed[x_key] for s in settings})
        if len(ticks) <= 10:  # the swept grid; more (an Optuna interval) would overlap
            axes.set_xticks(ticks)
        axes.set_xlabel(x_key)
        if summary.best is not None:
            best_x = summary.best.typed[x_key]
    if best_x is not None:
        axes.plot([best_x], [summary.best.mean], marker="*", markersize=16, color="gold",
                  markeredgecolor="black", linestyle="none", zorder=4, label=f"best: {summary.best.label}")
    direction = "lower" if summary.lower_is_better else "higher"
    axes.set_ylabel(f"{summary.metric} ({direction} is better)")
    axes.set_title(f"{summary.metric}: mean ± std over the runs of each setting", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()

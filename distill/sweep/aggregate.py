"""Group a sweep's runs by setting (the swept overrides other than the seed) and aggregate a metric."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from distill.sweep.collect import Run, Sweep, SweepError, metric_value

#: The override that replicates a setting rather than changing it.
REPLICATE_KEY = "seed"


@dataclass
class Setting:
    """One combination of swept values, with the metric over its runs (one per seed)."""

    values: dict[str, Any]  # key -> override text, e.g. {"loss.temperature": "4"}; "-" where absent
    typed: dict[str, Any]  # key -> parsed value, e.g. {"loss.temperature": 4}
    runs: list[Run] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    absent: frozenset[str] = frozenset()  # swept keys these runs do not set

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.scores) if self.scores else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n - 1); None below two runs."""
        return statistics.stdev(self.scores) if len(self.scores) > 1 else None

    @property
    def label(self) -> str:
        """The overrides these runs set, e.g. ``loss.temperature=4``; a key they lack is left out
        (never ``key=-``, which reads as a value)."""
        if not self.values:
            return "(all runs)"
        present = " ".join(f"{key}={text}" for key, text in self.values.items() if key not in self.absent)
        return present or f"(no override of {', '.join(self.values)})"


@dataclass
class Summary:
    metric: str
    lower_is_better: bool
    swept: list[str]  # keys whose value differs between runs, seed included
    fixed: dict[str, str]  # keys with one value in every run
    setting_keys: list[str]  # swept keys minus the seed
    replicates: list[str]  # the seed values seen
    settings: list[Setting]
    best: Setting | None


def _missing(value: Any) -> str:
    return "-" if value is None else value


def swept_and_fixed(runs: list[Run]) -> tuple[list[str], dict[str, str]]:
    """Keys whose override differs between runs (or is absent from some), and the rest."""
    keys: list[str] = []
    for run in runs:
        keys.extend(key for key in run.overrides if key not in keys)
    swept, fixed = [], {}
    for key in keys:
        texts = {run.overrides[key].text if key in run.overrides else None for run in runs}
        if len(texts) > 1:
            swept.append(key)
        else:
            fixed[key] = texts.pop()
    return swept, fixed


def value_order(value: Any) -> tuple:
    """Sort numbers by size, before anything else (text, lists, absent)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, "" if value is None else str(value))


def default_metric(sweep: Sweep) -> str:
    names = {run.metrics.get("metric") for run in sweep.complete}
    names.discard(None)
    if len(names) != 1:
        found = ", ".join(sorted(map(str, names))) or "none"
        raise SweepError(f"{sweep.root}: the runs' headline metrics differ or are absent ({found}); pick one with --metric")
    return names.pop()


def summarize(sweep: Sweep, metric: str | None = None, lower_is_better: bool = False) -> Summary:
    metric = metric or default_metric(sweep)
    if all(metric_value(run.metrics, metric) is None for run in sweep.complete):
        raise SweepError(
            f"{sweep.root}: no run has a value for metric {metric!r} "
            "(student figures such as accuracy or agreement, top-level ones such as retention, "
            "or a dotted path such as teacher.accuracy)"
        )
    # Refused runs never trained: their overrides are neither a setting nor a swept key.
    runs = sweep.attempted
    swept, fixed = swept_and_fixed(runs)
    setting_keys = [key for key in swept if key != REPLICATE_KEY]
    settings: dict[tuple, Setting] = {}
    for run in runs:
        texts = {key: run.overrides[key].text if key in run.overrides else None for key in setting_keys}
        typed = {key: run.overrides[key].value if key in run.overrides else None for key in setting_keys}
        absent = frozenset(key for key in setting_keys if key not in run.overrides)
        setting = settings.setdefault(
            tuple(texts.values()), Setting({k: _missing(v) for k, v in texts.items()}, typed, absent=absent)
        )
        setting.runs.append(run)
        score = metric_value(run.metrics, metric) if run.complete else None
        if score is not None:
            setting.scores.append(score)
    ordered = sorted(settings.values(), key=lambda s: tuple(value_order(s.typed[key]) for key in setting_keys))
    scored = [setting for setting in ordered if setting.scores]
    pick = min if lower_is_better else max
    best = pick(scored, key=lambda setting: setting.mean) if scored else None
    seeds = {run.overrides[REPLICATE_KEY].text: run.overrides[REPLICATE_KEY].value
             for run in runs if REPLICATE_KEY in run.overrides}
    replicates = sorted(seeds, key=lambda text: value_order(seeds[text]))
    return Summary(metric, lower_is_better, swept, fixed, setting_keys, replicates, ordered, best)

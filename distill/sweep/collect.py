"""Find the runs of a sweep folder: each run's overrides (``.hydra/overrides.yaml``) and ``metrics.json``."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser


class SweepError(ValueError):
    """A sweep folder that cannot be reported on (no runs, unknown metric)."""


@dataclass
class Override:
    """One ``key=value`` of a run's command line: ``text`` as typed, ``value`` as Hydra parses it."""

    text: str
    value: Any


@dataclass
class Run:
    """One run folder of a sweep; ``metrics`` is None when it has no readable ``metrics.json``."""

    name: str  # the folder, relative to the sweep folder
    path: Path
    overrides: dict[str, Override]
    metrics: dict[str, Any] | None
    problem: str | None = None  # why ``metrics`` is None
    refused: bool = False  # validation refused it: it never trained, its overrides are no setting

    @property
    def complete(self) -> bool:
        return self.metrics is not None


@dataclass
class Sweep:
    root: Path
    runs: list[Run] = field(default_factory=list)

    @property
    def complete(self) -> list[Run]:
        return [run for run in self.runs if run.complete]

    @property
    def missing(self) -> list[Run]:
        """Runs that failed or have not finished (refused runs are :attr:`refused`)."""
        return [run for run in self.runs if not run.complete and not run.refused]

    @property
    def refused(self) -> list[Run]:
        return [run for run in self.runs if run.refused]

    @property
    def attempted(self) -> list[Run]:
        """The runs that trained or tried to: every run but the refused ones."""
        return [run for run in self.runs if not run.refused]


def parse_overrides(lines: list[str]) -> dict[str, Override]:
    """``["loss.temperature=4", "+x=1"]`` -> ``{"loss.temperature": Override("4", 4), "x": ...}``."""
    parsed = OverridesParser.create().parse_overrides([str(line) for line in lines])
    result: dict[str, Override] = {}
    for line, override in zip(lines, parsed):
        key = override.key_or_group + (f"@{override.package}" if override.package else "")
        if override.is_delete():
            result[key] = Override("~", None)
        else:
            result[key] = Override(str(line).split("=", 1)[1], override.value())
    return result


def _sort_key(path: Path) -> tuple:
    # Job folders are numbered (0, 1, ..., 10): order by number, not as text.
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts)


def _read_metrics(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    if not path.is_file():
        return None, "no metrics.json (failed or unfinished)"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return None, f"unreadable metrics.json: {error}"
    if not isinstance(metrics, dict):
        return None, "metrics.json holds no JSON object"
    return metrics, None


#: How a refusal appears in a run's log: ``distill`` logs the validation problems at ERROR under its
#: own logger (distill/cli.py), and otherwise only a training-time failure (:data:`TRAINING_FAILURE`);
#: Hydra's log format puts the logger name and level in brackets.
REFUSAL_MARKER = "[distill][ERROR] - "


def _error_records(run_dir: Path):
    """The CLI's ERROR records in a run's log files (each from the marker to the next one)."""
    for log_file in sorted(run_dir.glob("*.log")):
        try:
            text = log_file.read_text(errors="replace")
        except OSError:
            continue
        yield from text.split(REFUSAL_MARKER)[1:]


def refusal(run_dir: Path) -> str | None:
    """The validation problems of a refused run, read from its log; None if it was not refused.

    Since distill removes a refused run's folder, only folders of older versions hold one.
    """
    for record in _error_records(run_dir):
        first, *rest = record.splitlines()
        if first.startswith(TRAINING_FAILURE):
            continue  # it trained, then failed: a missing run (see training_failure), not a refusal
        problems = []
        for line in rest:  # the record's own lines: "  - problem" or "  1. problem", up to the next record
            if not line.startswith(" "):
                break
            problems.append(re.sub(r"^\s+(?:-|\d+\.)\s+", "", line).strip())
        return "refused by validation: " + ("; ".join(problems) or first.strip())
    return None


#: How the CLI's training-time stops start in the log: a non-finite loss
#: (:class:`distill.errors.NonFiniteLossError`) and a preemption (:class:`distill.errors.Preempted`).
TRAINING_FAILURE = ("non-finite loss at training step", "stopped by a termination signal")


def training_failure(run_dir: Path) -> str | None:
    """The message of a run stopped by a non-finite loss or a preemption, read from its log; None otherwise."""
    for record in _error_records(run_dir):
        if record.startswith(TRAINING_FAILURE):
            return "stopped: " + record.splitlines()[0].strip()
    return None


def collect(root: str | Path) -> Sweep:
    """Every run under ``root`` (recursively): a folder holding ``.hydra/overrides.yaml``."""
    root = Path(root)
    if not root.is_dir():
        raise SweepError(f"{root}: not a folder")
    sweep = Sweep(root)
    for overrides_file in sorted(root.rglob(".hydra/overrides.yaml"), key=lambda p: _sort_key(p.relative_to(root))):
        run_dir = overrides_file.parent.parent
        lines = yaml.safe_load(overrides_file.read_text()) or []
        metrics, problem = _read_metrics(run_dir / "metrics.json")
        refused = refusal(run_dir) if metrics is None else None
        if metrics is None and refused is None:
            problem = training_failure(run_dir) or problem
        name = run_dir.relative_to(root).as_posix() if run_dir != root else "."
        sweep.runs.append(Run(name, run_dir, parse_overrides(lines), metrics, refused or problem, refused is not None))
    if not sweep.runs:
        raise SweepError(
            f"{root}: no runs found (no <run>/.hydra/overrides.yaml below it); "
            "point at a `distill -m ...` sweep folder such as outputs/multiruns/<date>/<time>"
        )
    if not sweep.complete:
        raise SweepError(f"{root}: {len(sweep.runs)} run folder(s), none with a readable metrics.json")
    return sweep


#: The student's agreement with its teacher (or ensemble) in ``metrics.json``, and the name runs
#: written before the rename used: either name finds either, so old and new runs report together.
AGREEMENT = "agreement"
LEGACY_AGREEMENT = "teacher_agreement"


def _student(metrics: dict[str, Any]) -> dict[str, Any]:
    """The run's student figures, an older run's ``teacher_agreement`` read as ``agreement``."""
    student = dict(metrics.get("student") or {})
    if AGREEMENT not in student and LEGACY_AGREEMENT in student:
        student[AGREEMENT] = student.pop(LEGACY_AGREEMENT)
    return student


def metric_value(metrics: dict[str, Any], name: str) -> float | None:
    """``name`` from a run's ``metrics.json``: a student figure (``accuracy``, ``agreement``, also as
    ``teacher_agreement``), a top-level one (``retention``, ``speedup``) or a dotted path
    (``teacher.accuracy``)."""
    name = {LEGACY_AGREEMENT: AGREEMENT, f"student.{LEGACY_AGREEMENT}": f"student.{AGREEMENT}"}.get(name, name)
    metrics = {**metrics, "student": _student(metrics)} if isinstance(metrics.get("student"), dict) else metrics
    if "." in name:
        node: Any = metrics
        for part in name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
    elif name in (metrics.get("student") or {}):
        node = metrics["student"][name]
    else:
        node = metrics.get(name)
    if isinstance(node, bool) or not isinstance(node, (int, float)) or math.isnan(node):
        return None
    return float(node)


def flat_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a ``metrics.json``, flattened: ``student.accuracy``, ``teacher.params``, ``retention``."""
    result: dict[str, Any] = {}
    if isinstance(metrics.get("student"), dict):
        metrics = {**metrics, "student": _student(metrics)}
    for key, value in metrics.items():
        if isinstance(value, dict):
            for inner, number in value.items():
                if isinstance(number, (int, float)) and not isinstance(number, bool):
                    result[f"{key}.{inner}"] = number
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            result[key] = value
    return result

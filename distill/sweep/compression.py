"""``distill-report compression``: quantized (and pruned) students against their size.

Each run folder's student is one point: its format, parameters, size on disk (the weight files of
``student/``), CPU latency at batch 1 and 32, task metric, agreement with the teacher and retention.
Runs that differ only in ``seed`` are one setting (mean ± std over seeds). Latency is measured
here, for each setting's first student, in interleaved rounds in this one process
(:func:`distill.latency.interleaved_latency`) on ``batch × 64``-token inputs: the end-of-run figures
in ``metrics.json`` come from separate processes and do not compare across runs.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from distill.atomic import write_atomic
from distill.export import load_student, size_on_disk
from distill.latency import interleaved_latency
from distill.sweep.aggregate import REPLICATE_KEY
from distill.sweep.collect import Run, SweepError, collect, metric_value
from distill.sweep.tables import _table, number

#: Batch sizes the report times, and the tokens per example.
LATENCY_BATCHES = (1, 32)
SEQUENCE_LENGTH = 64
#: Override keys that never make a setting (where a run is written, progress bars).
NOT_A_SETTING = {REPLICATE_KEY, "hydra.sweep.dir", "hydra.run.dir", "trainer.enable_progress_bar"}


@dataclass
class CompressedSetting:
    label: str
    runs: list[Run] = field(default_factory=list)

    def values(self, name: str) -> list[float]:
        return [value for run in self.runs if (value := metric_value(run.metrics, name)) is not None]

    @property
    def format(self) -> str:
        """e.g. ``int8 per-channel sym (qat)``; composed steps joined: ``2:4 wanda (prune-wanda) + int8 ... (qat)``."""
        compression = self.runs[0].metrics["student"].get("compression") or {}
        steps = compression.get("steps", [compression] if compression else [])
        return " + ".join(f"{s.get('format', '?')} ({s['method']})" if s.get("method") else s.get("format", "?") for s in steps) or "fp32"

    @property
    def size_mib(self) -> float | None:
        folder = self.student_folder
        return size_on_disk(folder) / 2**20 if folder is not None else None

    @property
    def student_folder(self) -> Path | None:
        path = self.runs[0].metrics["student"].get("path")
        folder = Path(path) if path else self.runs[0].path / "student"
        return folder if folder.is_dir() else None


def _label(run: Run) -> str:
    kept = [f"{key}={override.text}" for key, override in run.overrides.items() if key not in NOT_A_SETTING]
    return " ".join(kept) or "(no overrides)"


def collect_settings(run_dirs: list[str | Path]) -> list[CompressedSetting]:
    """The complete runs under each folder (a run folder or a sweep folder), grouped by setting."""
    settings: dict[str, CompressedSetting] = {}
    for folder in run_dirs:
        for run in collect(folder).complete:
            settings.setdefault(_label(run), CompressedSetting(_label(run))).runs.append(run)
    if not settings:
        raise SweepError(f"no complete runs under {', '.join(map(str, run_dirs))}")
    return list(settings.values())


def _inputs(batch: int, vocab_size: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, min(vocab_size, 20000), (batch, SEQUENCE_LENGTH), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def measure(settings: list[CompressedSetting], rounds: int) -> dict[str, dict[int, dict[str, Any]]]:
    """Latency per setting label and batch size, every student timed in the same interleaved rounds."""
    if rounds < 1:
        return {}
    models = {s.label: load_student(s.student_folder) for s in settings if s.student_folder is not None}
    if not models:
        return {}
    vocab = min(model.config.vocab_size for model in models.values())
    measured: dict[str, dict[int, dict[str, Any]]] = {label: {} for label in models}
    for batch in LATENCY_BATCHES:
        for label, figures in interleaved_latency(models, _inputs(batch, vocab), rounds=rounds).items():
            measured[label][batch] = figures
    return measured


def _mean_std(values: list[float], scale: float = 1.0) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    spread = f" ± {statistics.stdev(values) * scale:.2f}" if len(values) > 1 else ""
    return f"{mean:.2f}{spread}"


def _by_seed(setting: CompressedSetting, metric: str) -> dict[str, float]:
    return {
        run.overrides[REPLICATE_KEY].text if REPLICATE_KEY in run.overrides else "-": value
        for run in setting.runs
        if (value := metric_value(run.metrics, metric)) is not None
    }


def paired_difference(setting: CompressedSetting, baseline: CompressedSetting, metric: str) -> list[float]:
    """``metric`` of ``setting`` minus the baseline's, seed by seed (the seeds both have)."""
    mine, theirs = _by_seed(setting, metric), _by_seed(baseline, metric)
    return [mine[seed] - theirs[seed] for seed in sorted(mine.keys() & theirs.keys())]


def rows(
    settings: list[CompressedSetting], metric: str, latency: dict, baseline: CompressedSetting | None = None
) -> list[dict[str, Any]]:
    result = []
    for setting in settings:
        delta = paired_difference(setting, baseline, metric) if baseline is not None else []
        timed = latency.get(setting.label, {})
        scores = setting.values(metric)
        result.append(
            {
                "setting": setting.label,
                "format": setting.format,
                "n": len(setting.runs),
                "params_m": (setting.values("params") or [0])[0] / 1e6,
                "nonzero_params": (setting.values("nonzero_params") or [None])[0],
                "size_mib": setting.size_mib,
                **{f"latency_b{b}_ms": timed.get(b, {}).get("median_ms") for b in LATENCY_BATCHES},
                **{f"latency_b{b}_iqr_ms": timed.get(b, {}).get("iqr_ms") for b in LATENCY_BATCHES},
                metric: statistics.fmean(scores) if scores else None,
                f"{metric}_std": statistics.stdev(scores) if len(scores) > 1 else None,
                f"{metric}_text": _mean_std(scores, 100.0),
                "agreement_text": _mean_std(setting.values("agreement"), 100.0),
                "retention_text": _mean_std(setting.values("retention"), 100.0),
                "delta_vs_baseline": statistics.fmean(delta) if delta else None,
                "delta_text": _mean_std(delta, 100.0) + (f" (n={len(delta)})" if delta else ""),
            }
        )
    return result


def markdown(table: list[dict[str, Any]], metric: str, teacher: str, baseline: str | None = None) -> str:
    header = ["setting", "format", "n", "params", "non-zero", "size on disk", "latency b1", "latency b32",
              f"dev {metric} (%)", "agreement (%)", "retention (%)"]
    if baseline is not None:
        header.append("Δ vs baseline (points, paired by seed)")
    lines = [f"# Compression report ({metric}: mean ± std over seeds; teacher: {teacher})", ""]
    lines += _table(header, [
        [
            row["setting"], row["format"], row["n"], f"{row['params_m']:.1f}M",
            f"{row['nonzero_params'] / 1e6:.1f}M" if row["nonzero_params"] is not None else "-",
            f"{row['size_mib']:.1f} MiB" if row["size_mib"] is not None else "-",
            *(
                f"{row[f'latency_b{b}_ms']:.1f} ± {row[f'latency_b{b}_iqr_ms']:.1f} ms"
                if row[f"latency_b{b}_ms"] is not None else "-"
                for b in LATENCY_BATCHES
            ),
            row[f"{metric}_text"], row["agreement_text"], row["retention_text"],
            *([row["delta_text"]] if baseline is not None else []),
        ]
        for row in table
    ])
    if baseline is not None:
        lines += ["", f"Baseline: `{baseline}`. Δ: the setting's {metric} minus the baseline's, seed by seed "
                  "(mean ± std over the seeds both have); a gap smaller than its spread is no gap."]
    lines += ["", f"Latency: median ± IQR over interleaved rounds in one process, CPU, batch × {SEQUENCE_LENGTH} "
              "tokens, each setting's first student as exported.", "", "![size against quality](report.png)", ""]
    return "\n".join(lines)


def csv_text(table: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    columns = [key for key in table[0] if not key.endswith("_text")]
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def plot_png(table: list[dict[str, Any]], metric: str) -> bytes:
    """Task metric (mean ± std) against size on disk: the knee of the curve."""
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for row in table:
        if row["size_mib"] is None or row[metric] is None:
            continue
        axes.errorbar([row["size_mib"]], [row[metric] * 100], yerr=[(row[f"{metric}_std"] or 0) * 100],
                      marker="o", capsize=4, linestyle="none")
        axes.annotate(row["format"], (row["size_mib"], row[metric] * 100), fontsize=7,
                      xytext=(4, 4), textcoords="offset points")
    axes.set_xscale("log")
    axes.set_xlabel("student size on disk (MiB, log scale)")
    axes.set_ylabel(f"dev {metric} (%)")
    axes.grid(True, alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def report_compression(
    run_dirs: list[str | Path], out: str | Path, rounds: int = 20, baseline: str | None = None
) -> tuple[list[dict], list[Path]]:
    """Write report.md, report.csv and report.png for the runs under ``run_dirs`` into ``out``.
    ``baseline``: a setting's label (its overrides, as the table prints them, or the folder it
    came from) whose metric every other setting is compared with, paired by seed."""
    settings = collect_settings(run_dirs)
    reference = None
    if baseline is not None:
        matches = [s for s in settings if baseline in (s.label, *(str(run.path.parent) for run in s.runs))]
        if not matches:
            raise SweepError(f"--baseline {baseline!r} is none of the settings: {[s.label for s in settings]}")
        reference = matches[0]
    metric = settings[0].runs[0].metrics.get("metric", "accuracy")
    teacher_scores = [metric_value(run.metrics, f"teacher.{metric}") for s in settings for run in s.runs]
    teacher_scores = [score for score in teacher_scores if score is not None]
    teacher = f"{metric} {number(statistics.fmean(teacher_scores))}" if teacher_scores else "none"
    table = rows(settings, metric, measure(settings, rounds), reference)
    out = Path(out)
    written = [
        write_atomic(out / "report.md", markdown(table, metric, teacher, reference and reference.label)),
        write_atomic(out / "report.csv", csv_text(table)),
        write_atomic(out / "report.png", plot_png(table, metric)),
    ]
    return table, written

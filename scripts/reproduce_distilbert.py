"""Reproduce DistilBERT-style students on SST-2: what distillation adds over fine-tuning, with seeds.

One command, offline, resumable. It fine-tunes the MiniLM-L6 teacher once (one epoch of SST-2),
then trains 3-layer students cut from MiniLM-L6 (``experiment=distilbert_task``) in these arms,
each with the same steps and batch size within a regime:

- A  full labels, 700 steps, seeds 0-2: CE only vs KD (0.5·KL·T² + 0.5·CE, T = 2).
- B  1,000 labels, 700 steps, seeds 0-2: CE only vs KD with the rest of the SST-2 training text
     as a transfer set (its labels unused).
- A+ KD as in A for one full epoch (2,105 steps), seed 0.
- C  student copied from the *fine-tuned teacher's* layers, CE only vs KD, seed 0.
- D  general distillation first (``experiment=distilbert_general``), then task KD as in A, seed 0.
- T  temperature sweep: KD as in A at T = 1, 2, 4, 8, seeds 0-2 (the T = 2 runs are arm A's KD runs),
     reported by ``distill-report sweep``.
- A9 (opt-in, ``--arms ... A9``) KD as in A with the soft targets weighted higher,
     0.9·KL·T² + 0.1·CE, seeds 0-2, paired with arm A's CE runs.
- A+seeds (opt-in) arm A+ at the other seeds (1, 2), reported with seed 0 as one row.

Every run is a plain ``distill`` command (printed, and listed in the results). A run is done when
its ``metrics.json`` exists; an interrupted script picks up where it stopped.

    DISTILL_DATA_DIR=../shared/data python scripts/reproduce_distilbert.py            # full scale
    DISTILL_DATA_DIR=../shared/data python scripts/reproduce_distilbert.py --quick    # smoke scale

The full run writes ``docs/results.md`` (tables: dev accuracy mean ± std over seeds, the paired
KD − CE difference and its spread, retention, params, size on disk, CPU latency, speed-up) and
copies the sweep report into ``docs/results/``. ``--quick`` writes under its work directory only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# The results page lives beside this script (scripts/ is on sys.path when it runs; tests load both by path).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from distilbert_results import portable, render, run_minutes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Scale:
    """Budgets of one scale of the reproduction."""

    teacher_steps: int
    steps: int
    epoch_steps: int
    few_labels: int
    seeds: tuple[int, ...]
    temperatures: tuple[float, ...]
    general_steps: int
    extra: tuple[str, ...] = ()


FULL = Scale(
    teacher_steps=2105, steps=700, epoch_steps=2105, few_labels=1000, seeds=(0, 1, 2),
    temperatures=(1, 2, 4, 8), general_steps=500,
)
QUICK = Scale(
    teacher_steps=30, steps=12, epoch_steps=24, few_labels=64, seeds=(0, 1),
    temperatures=(1, 2), general_steps=8,
    extra=("data.eval_limit=128", "report.latency_repeats=3"),
)
#: Arms run by default, and the ones only run when named in ``--arms``.
DEFAULT_ARMS = ("A", "B", "A+", "C", "D", "T")
OPTIONAL_ARMS = ("A9", "A+seeds")


@dataclass
class Run:
    """One ``distill`` job: where it writes and the overrides it takes."""

    arm: str
    name: str
    seed: int
    run_dir: Path
    overrides: list[str]
    metrics: dict | None = field(default=None, repr=False)
    #: Planned by an opt-in arm (its run time is reported apart from the default arms').
    opt_in: bool = False

    @property
    def command(self) -> list[str]:
        return ["distill", *self.overrides]


class Reproduction:
    def __init__(self, scale: Scale, work_dir: Path, quick: bool) -> None:
        self.scale = scale
        self.work = work_dir
        self.quick = quick
        self.teacher_dir = work_dir / "teacher"
        self.general_dir = work_dir / "D" / "general"
        self.sweep_dir = work_dir / "sweep"
        self.env = {
            **os.environ,
            "DISTILL_CACHE_DIR": str(work_dir / "cache"),
            "TOKENIZERS_PARALLELISM": "false",
        }

    # -- the runs -----------------------------------------------------------------------------
    def _common(self) -> list[str]:
        return ["logger=csv", "callbacks=none", "trainer.enable_progress_bar=false", *self.scale.extra]

    def _task(self, arm: str, name: str, seed: int, run_dir: Path, *overrides: str, opt_in: bool = False) -> Run:
        base = [
            "experiment=distilbert_task",
            "teacher=finetuned",
            f"teacher.name_or_path={self.teacher_dir / 'student'}",
            f"trainer.max_steps={self.scale.steps}",
            f"seed={seed}",
        ]
        return Run(arm, name, seed, run_dir, [*base, *overrides, *self._common()], opt_in=opt_in)

    def teacher_run(self) -> Run:
        overrides = ["experiment=distilbert_teacher", f"trainer.max_steps={self.scale.teacher_steps}"]
        return Run("teacher", "teacher", 0, self.teacher_dir, [*overrides, *self._common()])

    def general_run(self) -> Run:
        overrides = ["experiment=distilbert_general", f"trainer.max_steps={self.scale.general_steps}"]
        return Run("D", "general", 0, self.general_dir, [*overrides, *self._common()])

    def task_runs(self, arms: list[str]) -> list[Run]:
        runs: list[Run] = []
        scale = self.scale
        few = [f"data.train_limit={scale.few_labels}"]
        for seed in scale.seeds:
            if "A" in arms:
                runs.append(self._task("A", "ce", seed, self.work / "A" / f"ce-seed{seed}", "loss=ce"))
                # Arm A's KD runs are the sweep's T = 2 points.
                runs.append(
                    self._task("A", "kd", seed, self.sweep_dir / f"T2-seed{seed}", "loss.temperature=2")
                )
            if "A9" in arms:
                runs.append(
                    self._task(
                        "A9", "kd", seed, self.work / "A9" / f"kd-seed{seed}",
                        "loss.terms.kd.weight=0.9", "loss.terms.ce.weight=0.1", opt_in=True,
                    )
                )
            if "B" in arms:
                runs.append(self._task("B", "ce", seed, self.work / "B" / f"ce-seed{seed}", "loss=ce", *few))
                runs.append(
                    self._task(
                        "B", "kd", seed, self.work / "B" / f"kd-seed{seed}", *few, "data.transfer.source=train_rest"
                    )
                )
        first = scale.seeds[0]
        epoch = f"trainer.max_steps={scale.epoch_steps}"
        if "A+" in arms:
            runs.append(self._task("A+", "kd", first, self.work / "A+" / "kd-epoch", epoch))
        if "A+seeds" in arms:
            for seed in scale.seeds[1:]:
                runs.append(self._task("A+", "kd", seed, self.work / "A+" / f"kd-epoch-seed{seed}", epoch, opt_in=True))
        if "T" in arms:
            # Seed by seed: if the budget runs out, every temperature still has the first seeds.
            for seed in scale.seeds:
                for temperature in scale.temperatures:
                    if temperature == 2 and "A" in arms:
                        continue
                    runs.append(
                        self._task(
                            "T", f"T{temperature:g}", seed, self.sweep_dir / f"T{temperature:g}-seed{seed}",
                            f"loss.temperature={temperature:g}",
                        )
                    )
        if "C" in arms:
            for name, loss in (("ce", ["loss=ce"]), ("kd", [])):
                runs.append(
                    self._task("C", name, first, self.work / "C" / f"{name}-seed{first}", "student=from_teacher_3l", *loss)
                )
        if "D" in arms:
            runs.append(
                self._task(
                    "D", "kd", first, self.work / "D" / f"kd-seed{first}",
                    "student=minilm_l6", f"student.name_or_path={self.general_dir / 'student'}",
                )
            )
        return runs

    # -- running ------------------------------------------------------------------------------
    def execute(self, run: Run) -> dict:
        metrics_file = run.run_dir / "metrics.json"
        if metrics_file.is_file():
            print(f"[done]  {run.arm:7s} {run.name:6s} seed {run.seed}: {run.run_dir}", flush=True)
            run.metrics = json.loads(metrics_file.read_text())
            return run.metrics
        if run.run_dir.exists():  # an interrupted run: start it again from scratch
            shutil.rmtree(run.run_dir)
        command = [sys.executable, "-m", "distill", *run.overrides, f"hydra.run.dir={run.run_dir}"]
        print(f"[run]   {run.arm:7s} {run.name:6s} seed {run.seed}: {shlex.join(run.command)}", flush=True)
        log_file = self.work / "logs" / f"{run.run_dir.relative_to(self.work)}.log".replace("/", "__")
        log_file.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with open(log_file, "w") as log:
            code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        if code != 0 or not metrics_file.is_file():
            tail = "".join(log_file.read_text().splitlines(keepends=True)[-30:])
            raise SystemExit(f"run failed (exit {code}), log {log_file}:\n{tail}")
        run.metrics = json.loads(metrics_file.read_text())
        minutes = (time.perf_counter() - start) / 60
        accuracy = run.metrics["student"].get("accuracy")
        shown = f"dev accuracy {accuracy:.4f}" if accuracy is not None else "done"
        print(f"        {shown} in {minutes:.1f} min", flush=True)
        return run.metrics



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke scale: a few steps per run, 2 seeds")
    parser.add_argument("--work-dir", type=Path, default=None, help="where runs go (default: outputs/reproduce[-quick])")
    parser.add_argument(
        "--arms", nargs="+", default=list(DEFAULT_ARMS), choices=[*DEFAULT_ARMS, *OPTIONAL_ARMS],
        help=f"arms to run (default: {' '.join(DEFAULT_ARMS)}; opt-in: {' '.join(OPTIONAL_ARMS)})",
    )
    parser.add_argument("--render-only", action="store_true", help="write the results from the runs done so far")
    parser.add_argument("--out", type=Path, default=None, help="results file (default: docs/results.md; --quick: <work>/results.md)")
    args = parser.parse_args(argv)
    if not os.environ.get("DISTILL_DATA_DIR"):
        shared = REPO.parent / "shared" / "data"
        if not (shared / "sst2").is_dir():
            parser.error("set DISTILL_DATA_DIR to the folder holding sst2/ and wikitext2/")
        os.environ["DISTILL_DATA_DIR"] = str(shared)
    scale = QUICK if args.quick else FULL
    work = (args.work_dir or REPO / "outputs" / ("reproduce-quick" if args.quick else "reproduce")).resolve()
    out = args.out or (work / "results.md" if args.quick else REPO / "docs" / "results.md")
    work.mkdir(parents=True, exist_ok=True)

    reproduction = Reproduction(scale, work, args.quick)
    teacher_run = reproduction.teacher_run()
    planned = [teacher_run]
    runs = reproduction.task_runs(args.arms)
    for run in runs:
        if run.arm == "D" and reproduction.general_run().run_dir not in [r.run_dir for r in planned]:
            planned.append(reproduction.general_run())  # general distillation first, then its task run
        planned.append(run)
    for run in planned:
        if args.render_only:
            metrics_file = run.run_dir / "metrics.json"
            run.metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
        else:
            reproduction.execute(run)
    if teacher_run.metrics is None:
        raise SystemExit(f"no teacher results under {teacher_run.run_dir}: run without --render-only first")
    teacher = teacher_run.metrics
    missing = [run for run in runs if run.metrics is None]
    runs = [run for run in runs if run.metrics is not None]
    ordered = [run for run in planned if run.metrics is not None]

    sweep_report = None
    if "T" in args.arms and any(run.run_dir.parent == reproduction.sweep_dir for run in runs):
        subprocess.check_call(
            [sys.executable, "-m", "distill.report_cli", "sweep", str(reproduction.sweep_dir)], cwd=REPO
        )
        sweep_report = (reproduction.sweep_dir / "report.md").read_text()
        figures = out.parent / "results"
        figures.mkdir(parents=True, exist_ok=True)
        shutil.copy(reproduction.sweep_dir / "report.png", figures / "temperature_sweep.png")
        table = portable((reproduction.sweep_dir / "report.csv").read_text(), work)
        (figures / "temperature_sweep.csv").write_text(table)  # run paths as <work-dir>, like this page
        sweep_report = sweep_report.replace("(report.png)", "(results/temperature_sweep.png)")
        # Nested under this page's "## Temperature sweep": its headings move two levels down.
        sweep_report = "\n".join("##" + line if line.startswith("#") else line for line in sweep_report.splitlines())
    commands = [shlex.join(run.command) for run in ordered]
    minutes = sum(run_minutes(run.run_dir) for run in ordered)
    opt_in = sum(run_minutes(run.run_dir) for run in ordered if run.opt_in)
    invocation = shlex.join(
        ["DISTILL_DATA_DIR=../shared/data", "python", "scripts/reproduce_distilbert.py"]
        + (["--quick"] if args.quick else [])
        + (["--arms", *args.arms] if args.arms != list(DEFAULT_ARMS) else [])
    )
    text = render(runs, teacher, scale, commands, sweep_report, minutes, args.quick, opt_in, invocation)
    if missing:
        text += "\n## Not run yet\n\n" + "\n".join(
            f"- {run.arm} {run.name} seed {run.seed}: `{shlex.join(run.command)}`" for run in missing
        ) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(f".{out.name}.tmp")
    staged.write_text(portable(text, work))
    os.replace(staged, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""scripts/reproduce_distilbert.py: the run plan, and how its runs reach the results page."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "reproduce_distilbert.py"
spec = importlib.util.spec_from_file_location("reproduce_distilbert", SCRIPT)
reproduce = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = reproduce  # dataclasses look their module up there
spec.loader.exec_module(reproduce)
import distilbert_results as results  # noqa: E402  (scripts/ put on sys.path by the script)


def _run(arm: str, name: str, seed: int, accuracy: float) -> object:
    run = reproduce.Run(arm, name, seed, Path(f"/runs/{arm}/{name}{seed}"), [])
    run.metrics = {"student": {"accuracy": accuracy, "params": 1, "latency_ms": 1.0}, "speedup": 2.0}
    return run


def test_plan_shares_the_sweep_t2_runs_with_arm_a_and_keeps_budgets_equal(tmp_path: Path) -> None:
    plan = reproduce.Reproduction(reproduce.FULL, tmp_path, quick=False).task_runs(["A", "B", "A+", "C", "D", "T"])
    a_kd = [run for run in plan if (run.arm, run.name) == ("A", "kd")]
    assert [run.run_dir.parent for run in a_kd] == [tmp_path / "sweep"] * 3
    assert not [run for run in plan if run.arm == "T" and "loss.temperature=2" in run.overrides]
    assert len([run for run in plan if run.arm == "T"]) == 9  # T = 1, 4, 8 x 3 seeds
    for run in plan:
        steps = [o for o in run.overrides if o.startswith("trainer.max_steps=")]
        assert steps[-1] == ("trainer.max_steps=2105" if run.arm == "A+" else "trainer.max_steps=700")
    b_kd = [run for run in plan if (run.arm, run.name) == ("B", "kd")]
    assert all("data.transfer.source=train_rest" in r.overrides and "data.train_limit=1000" in r.overrides for r in b_kd)
    b_ce = [run for run in plan if (run.arm, run.name) == ("B", "ce")]
    assert all("data.transfer.source=train_rest" not in r.overrides for r in b_ce)


def test_opt_in_arm_a9_is_planned_only_when_named_and_paired_with_arm_a_ce(tmp_path: Path) -> None:
    reproduction = reproduce.Reproduction(reproduce.FULL, tmp_path, quick=False)
    assert not [run for run in reproduction.task_runs(list(reproduce.DEFAULT_ARMS)) if run.arm == "A9"]
    a9 = [run for run in reproduction.task_runs(["A", "A9"]) if run.arm == "A9"]
    assert [run.seed for run in a9] == [0, 1, 2]
    assert all({"loss.terms.kd.weight=0.9", "loss.terms.ce.weight=0.1", "trainer.max_steps=700"} <= set(r.overrides)
               for r in a9)
    runs = [_run("A", "ce", 0, 0.80), _run("A", "ce", 1, 0.81), _run("A9", "kd", 0, 0.83), _run("A9", "kd", 1, 0.80)]
    assert results.paired(runs, "A9") == pytest.approx([3.0, -1.0])
    assert results.paired(runs, "A") == []  # arm A has no KD runs here


def test_opt_in_epoch_seeds_join_the_a_plus_row_and_are_timed_apart(tmp_path: Path) -> None:
    reproduction = reproduce.Reproduction(reproduce.FULL, tmp_path, quick=False)
    plan = reproduction.task_runs(["A+", "A+seeds"])
    assert [(run.arm, run.seed, run.opt_in) for run in plan] == [("A+", 0, False), ("A+", 1, True), ("A+", 2, True)]
    assert all("trainer.max_steps=2105" in run.overrides for run in plan)
    assert len({run.run_dir for run in plan}) == 3
    for run, accuracy in zip(plan, (0.87, 0.86, 0.88)):
        run.metrics = {"student": {"accuracy": accuracy, "params": 1, "latency_ms": 1.0}, "speedup": 2.0}
    rows = results.arm_rows(plan)
    assert len(rows) == 1 and rows[0]["seeds"] == [0, 1, 2]


def test_the_results_page_names_the_runs_folder_not_this_machines_path(tmp_path: Path) -> None:
    work = tmp_path / "reproduce"
    plan = reproduce.Reproduction(reproduce.FULL, work, quick=False)
    command = " ".join(plan.task_runs(["A"])[0].command)
    assert str(work) in command  # the plan runs with the absolute path ...
    page = results.portable(f"Sweep report: `{work}/sweep`\n{command}\n", work)
    assert str(tmp_path) not in page  # ... the page names it <work-dir>
    assert "Sweep report: `<work-dir>/sweep`" in page and "teacher.name_or_path=<work-dir>/teacher/student" in page

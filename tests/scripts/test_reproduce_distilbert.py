"""scripts/reproduce_distilbert.py: the run plan and the arithmetic of its results table."""

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


def _run(arm: str, name: str, seed: int, accuracy: float) -> object:
    run = reproduce.Run(arm, name, seed, Path(f"/runs/{arm}/{name}{seed}"), [])
    run.metrics = {"student": {"accuracy": accuracy, "params": 1, "latency_ms": 1.0}, "speedup": 2.0}
    return run


def test_paired_differences_match_seeds_and_skip_unpaired_ones() -> None:
    runs = [_run("A", "ce", 0, 0.80), _run("A", "kd", 0, 0.82), _run("A", "ce", 1, 0.81),
            _run("A", "kd", 1, 0.815), _run("A", "kd", 2, 0.9), _run("B", "ce", 0, 0.5)]
    assert reproduce.paired(runs, "A") == pytest.approx([2.0, 0.5])
    assert reproduce.paired(runs, "B") == []


def test_gap_verdict_calls_a_difference_within_its_spread_no_gap() -> None:
    assert reproduce.gap_verdict([2.0, -1.0, 0.5], None).startswith("no gap")
    assert reproduce.gap_verdict([1.2, 1.1, 1.3], 1.0) == "KD ahead; goal ≥ 1 points: met"
    assert reproduce.gap_verdict([0.9, 0.8, 1.0], 1.0).endswith("NOT met")
    assert reproduce.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    # One seed has no spread to read the difference against; equal accuracies are a tie.
    assert reproduce.gap_verdict([0.0], None) == "one seed, no spread measured: tie"
    assert reproduce.gap_verdict([0.35], None, names=("D", "A")) == "one seed, no spread measured: D ahead"
    assert reproduce.difference_row("C", [0.0], "tie") == "| C | +0.00 | +0.00 | tie |"


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
    assert reproduce.paired(runs, "A9") == pytest.approx([3.0, -1.0])
    assert reproduce.paired(runs, "A") == []  # arm A has no KD runs here


def test_opt_in_epoch_seeds_join_the_a_plus_row_and_are_timed_apart(tmp_path: Path) -> None:
    reproduction = reproduce.Reproduction(reproduce.FULL, tmp_path, quick=False)
    plan = reproduction.task_runs(["A+", "A+seeds"])
    assert [(run.arm, run.seed, run.opt_in) for run in plan] == [("A+", 0, False), ("A+", 1, True), ("A+", 2, True)]
    assert all("trainer.max_steps=2105" in run.overrides for run in plan)
    assert len({run.run_dir for run in plan}) == 3
    for run, accuracy in zip(plan, (0.87, 0.86, 0.88)):
        run.metrics = {"student": {"accuracy": accuracy, "params": 1, "latency_ms": 1.0}, "speedup": 2.0}
    rows = reproduce.arm_rows(plan)
    assert len(rows) == 1 and rows[0]["seeds"] == [0, 1, 2]


def test_retention_reading_weighs_the_goal_against_the_spread() -> None:
    assert reproduce.retention_reading([0.988], quick=False) == "one seed; goal ≥ 99%: NOT met"
    assert reproduce.retention_reading([0.9883, 0.9923, 0.9883], quick=False) == (
        "mean ± std over 3 seeds; goal ≥ 99%: NOT met, by 0.04 points, within the seed spread"
    )
    assert reproduce.retention_reading([0.995, 0.996], quick=False).endswith("goal ≥ 99%: met")
    assert reproduce.retention_reading([0.5, 0.6], quick=True) == "mean ± std over 2 seeds"


def test_the_results_page_names_the_runs_folder_not_this_machines_path(tmp_path: Path) -> None:
    work = tmp_path / "reproduce"
    plan = reproduce.Reproduction(reproduce.FULL, work, quick=False)
    command = " ".join(plan.task_runs(["A"])[0].command)
    assert str(work) in command  # the plan runs with the absolute path ...
    page = reproduce.portable(f"Sweep report: `{work}/sweep`\n{command}\n", work)
    assert str(tmp_path) not in page  # ... the page names it <work-dir>
    assert "Sweep report: `<work-dir>/sweep`" in page and "teacher.name_or_path=<work-dir>/teacher/student" in page

"""scripts/distilbert_results.py: the arithmetic of the DistilBERT reproduction's results page."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "distilbert_results.py"
spec = importlib.util.spec_from_file_location("distilbert_results", SCRIPT)
results = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = results
spec.loader.exec_module(results)


def _run(arm: str, name: str, seed: int, accuracy: float) -> SimpleNamespace:
    """A finished run as the results page reads it (any object with these fields will do)."""
    metrics = {"student": {"accuracy": accuracy, "params": 1, "latency_ms": 1.0}, "speedup": 2.0}
    return SimpleNamespace(arm=arm, name=name, seed=seed, run_dir=Path(f"/runs/{arm}/{name}{seed}"), metrics=metrics)


def test_paired_differences_match_seeds_and_skip_unpaired_ones() -> None:
    runs = [_run("A", "ce", 0, 0.80), _run("A", "kd", 0, 0.82), _run("A", "ce", 1, 0.81),
            _run("A", "kd", 1, 0.815), _run("A", "kd", 2, 0.9), _run("B", "ce", 0, 0.5)]
    assert results.paired(runs, "A") == pytest.approx([2.0, 0.5])
    assert results.paired(runs, "B") == []


def test_gap_verdict_calls_a_difference_within_its_spread_no_gap() -> None:
    assert results.gap_verdict([2.0, -1.0, 0.5], None).startswith("no gap")
    assert results.gap_verdict([1.2, 1.1, 1.3], 1.0) == "KD ahead; goal ≥ 1 points: met"
    assert results.gap_verdict([0.9, 0.8, 1.0], 1.0).endswith("NOT met")
    assert results.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    # One seed has no spread to read the difference against; equal accuracies are a tie.
    assert results.gap_verdict([0.0], None) == "one seed, no spread measured: tie"
    assert results.gap_verdict([0.35], None, names=("D", "A")) == "one seed, no spread measured: D ahead"
    assert results.difference_row("C", [0.0], "tie") == "| C | +0.00 | +0.00 | tie |"


def test_retention_reading_weighs_the_goal_against_the_spread() -> None:
    assert results.retention_reading([0.988], quick=False) == "one seed; goal ≥ 99%: NOT met"
    assert results.retention_reading([0.9883, 0.9923, 0.9883], quick=False) == (
        "mean ± std over 3 seeds; goal ≥ 99%: NOT met, by 0.04 points, within the seed spread"
    )
    assert results.retention_reading([0.995, 0.996], quick=False).endswith("goal ≥ 99%: met")
    assert results.retention_reading([0.5, 0.6], quick=True) == "mean ± std over 2 seeds"

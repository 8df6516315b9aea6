"""``distill-report compression``: runs grouped by setting across seeds, sizes from the student's
files, latency timed for every setting, and the three report files."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from conftest import TINY_RUN, compose

from distill.report_cli import main
from distill.train import train


def tiny_run(root, name: str, overrides: list[str]) -> None:
    folder = root / name
    train(compose([*TINY_RUN, "data.train_limit=16", "trainer.max_steps=2", *overrides], folder))
    (folder / "run" / ".hydra").mkdir()
    (folder / "run" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))


def test_the_report_groups_seeds_and_puts_each_format_beside_its_size(data_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    tiny_run(runs, "fp32-0", ["seed=0"])
    tiny_run(runs, "fp32-1", ["seed=1"])
    tiny_run(runs, "int4-0", ["compress=ptq_int4", "compress.quantize.group_size=16", "seed=0"])
    assert main(["compression", str(runs), "--out", str(tmp_path / "report"), "--rounds", "2",
                 "--baseline", "(no overrides)"]) == 0
    rows = list(csv.DictReader((tmp_path / "report" / "report.csv").open()))
    by_setting = {row["setting"]: row for row in rows}
    float_row = by_setting["(no overrides)"]
    int4_row = by_setting["compress=ptq_int4 compress.quantize.group_size=16"]
    assert float_row["n"] == "2" and int4_row["n"] == "1"  # seeds 0 and 1 are one setting
    assert float_row["format"] == "fp32" and int4_row["format"] == "int4 g16 sym, emb int8 (ptq-rtn)"
    assert float(int4_row["size_mib"]) < float(float_row["size_mib"]) / 3  # embeddings int8, Linear int4
    for row in rows:
        assert float(row["latency_b1_ms"]) > 0 and float(row["latency_b32_ms"]) > 0
    # Paired by seed: the int4 student (seed 0) against the float student of seed 0 only.
    summaries = {run_dir: json.loads((runs / run_dir / "run" / "metrics.json").read_text())["student"]
                 for run_dir in ("fp32-0", "int4-0")}
    expected = summaries["int4-0"]["accuracy"] - summaries["fp32-0"]["accuracy"]
    assert float(int4_row["delta_vs_baseline"]) == pytest.approx(expected, abs=1e-9)
    assert float(float_row["delta_vs_baseline"]) == 0.0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Baseline: `(no overrides)`" in text
    assert "| (no overrides) | fp32 | 2 |" in text and " ± " in text
    assert (tmp_path / "report" / "report.png").read_bytes().startswith(b"\x89PNG")
    assert "wrote" in capsys.readouterr().out


def test_a_folder_without_runs_is_an_error(tmp_path, capsys):
    assert main(["compression", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "no runs found" in capsys.readouterr().err


def test_pruned_and_composed_students_show_their_steps_and_non_zero_parameters(data_dir, tmp_path):
    runs = tmp_path / "runs"
    tiny_run(runs, "dense", ["seed=0"])
    tiny_run(runs, "pruned", ["compress=prune_oneshot", "compress.prune.sparsity=0.5", "seed=0"])
    tiny_run(runs, "ffn", ["compress=[prune_ffn,ptq_int8]", "compress.prune.sparsity=0.5", "seed=0"])
    assert main(["compression", str(runs), "--out", str(tmp_path / "report"), "--rounds", "0"]) == 0
    rows = {row["format"]: row for row in csv.DictReader((tmp_path / "report" / "report.csv").open())}
    dense, pruned = rows["fp32"], rows["50% magnitude (layer) (prune-magnitude)"]
    composed = rows["FFN neurons 50% (activation) (prune-ffn-activation) + int8 per-channel sym + int8 act, emb int8 (ptq-rtn)"]
    masked = json.loads((runs / "pruned" / "run" / "metrics.json").read_text())["student"]["compression"]
    assert float(pruned["nonzero_params"]) == float(dense["nonzero_params"]) - masked["pruned_parameters"]
    assert float(pruned["params_m"]) == float(dense["params_m"])  # zeros are still parameters
    assert float(composed["params_m"]) < float(dense["params_m"])  # removed neurons are not

"""`distill-report sweep` on synthetic sweep folders (distill/sweep/, distill/report_cli.py): seeds
aggregated, tables, plot, CLI, and runs that were refused, stopped or never finished. The launcher and
sweeper presets and a real joblib sweep: tests/test_sweep_launchers.py."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill.report_cli import main as report_main
from distill.sweep import SweepError, report_sweep
from distill.sweep.collect import parse_overrides

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: Student accuracy per temperature, one value per seed 0, 1, 2.
ACCURACY = {1: [0.80, 0.82, 0.84], 2: [0.85, 0.86, 0.87], 4: [0.83, 0.83, 0.86]}
TEACHER_ACCURACY = 0.90


def make_run(root: Path, name: str, overrides: list[str], metrics: dict | None) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def metrics_for(accuracy: float, latency_ms: float = 10.0) -> dict:
    """A metrics.json as distill/train.py wrote it before the agreement was renamed (``teacher_agreement``)."""
    return {
        "metric": "accuracy",
        "student": {"accuracy": accuracy, "f1": accuracy - 0.01, "params": 17_400_000, "latency_ms": latency_ms,
                    "teacher_agreement": accuracy + 0.05, "path": "/runs/x/student"},
        "teacher": {"accuracy": TEACHER_ACCURACY, "f1": 0.9, "params": 22_700_000, "latency_ms": 16.0},
        "retention": accuracy / TEACHER_ACCURACY,
        "speedup": 16.0 / latency_ms,
        "compression": 22_700_000 / 17_400_000,
        "objective": "0.5·KL·T² + 0.5·CE",
        "output_dir": "/runs/x",
    }


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    """`distill -m experiment=quickstart loss.temperature=1,2,4,8 seed=0,1,2` where T=8 never finished.

    Runs 0-8 hold T=1,2,4 x seed 0,1,2; run 10 (T=8) has no metrics.json (its folder sorts after 8, not after 1).
    """
    root = tmp_path / "multiruns" / "2026-01-31" / "12-00-00"
    number = 0
    for temperature, scores in ACCURACY.items():
        for seed, accuracy in enumerate(scores):
            overrides = ["experiment=quickstart", f"loss.temperature={temperature}", f"seed={seed}"]
            make_run(root, str(number), overrides, metrics_for(accuracy, latency_ms=5.0 + temperature))
            number += 1
    make_run(root, "10", ["experiment=quickstart", "loss.temperature=8", "seed=0"], None)
    (root / "multirun.yaml").write_text("hydra: {}\n")  # Hydra's own file in a sweep folder: not a run
    return root


def test_report_groups_seeds_into_mean_and_sample_std(sweep_dir):
    report = report_sweep(sweep_dir)
    summary = report.summary
    assert summary.metric == "accuracy" and summary.setting_keys == ["loss.temperature"]
    assert summary.swept == ["loss.temperature", "seed"] and summary.fixed == {"experiment": "quickstart"}
    assert summary.replicates == ["0", "1", "2"]
    by_label = {setting.label: setting for setting in summary.settings}
    assert list(by_label) == ["loss.temperature=1", "loss.temperature=2", "loss.temperature=4", "loss.temperature=8"]
    for temperature, scores in ACCURACY.items():
        setting = by_label[f"loss.temperature={temperature}"]
        assert setting.n == 3
        assert setting.mean == pytest.approx(sum(scores) / 3)
        assert setting.std == pytest.approx(math.sqrt(sum((s - sum(scores) / 3) ** 2 for s in scores) / 2))
    assert by_label["loss.temperature=1"].std == pytest.approx(0.02)
    assert by_label["loss.temperature=2"].std == pytest.approx(0.01)
    assert by_label["loss.temperature=4"].std == pytest.approx(math.sqrt(0.0003))
    unfinished = by_label["loss.temperature=8"]
    assert unfinished.n == 0 and unfinished.mean is None and [run.name for run in unfinished.runs] == ["10"]
    assert summary.best is by_label["loss.temperature=2"]
    assert [run.name for run in report.sweep.runs] == [*map(str, range(9)), "10"]
    assert [run.name for run in report.sweep.missing] == ["10"]


def test_markdown_has_the_settings_runs_missing_runs_and_best(sweep_dir):
    report = report_sweep(sweep_dir)
    assert report.markdown == sweep_dir / "report.md"
    text = report.markdown.read_text()
    assert "**Best setting: loss.temperature=2 (accuracy 0.8600 ± 0.0100, n=3)**" in text
    assert "Runs: 9 complete, 1 missing" in text and "seeds: 0, 1, 2" in text
    assert "Same in every run: `experiment=quickstart`" in text
    settings = text.split("## Settings")[1].split("## Runs")[0]
    assert [line for line in settings.splitlines() if line.startswith("|")] == [
        "| loss.temperature | accuracy (mean ± std) | n |",
        "|---|---|---|",
        "| 1 | 0.8200 ± 0.0200 | 3 |",
        "| 2 | 0.8600 ± 0.0100 ★ | 3 |",
        "| 4 | 0.8400 ± 0.0173 | 3 |",
        "| 8 | - | 0 |",
    ]
    assert "![accuracy per setting](report.png)" in settings
    runs = text.split("## Runs")[1].split("## Missing runs")[0]
    rows = [line for line in runs.splitlines() if line.startswith("|")]
    assert rows[0] == "| run | loss.temperature | seed | accuracy | status |"
    assert rows[2] == "| 0 | 1 | 0 | 0.8000 | ok |"
    assert rows[-1] == "| 10 | 8 | 0 | - | missing |"
    assert len(rows) == 2 + 10
    missing = text.split("## Missing runs")[1]
    assert "- `10` (`experiment=quickstart` `loss.temperature=8` `seed=0`): no metrics.json" in missing


def test_csv_has_one_row_per_run_with_overrides_and_metrics(sweep_dir):
    report = report_sweep(sweep_dir)
    rows = list(csv.DictReader(report.csv.open()))
    assert len(rows) == 10
    header = list(rows[0])
    assert header[:5] == ["run", "status", "experiment", "loss.temperature", "seed"]
    # The old runs' teacher_agreement lands in the column new runs fill (student.agreement).
    assert {"student.accuracy", "student.agreement", "teacher.accuracy", "retention", "speedup"} <= set(header)
    assert "student.teacher_agreement" not in header
    assert "student.path" not in header and "objective" not in header  # numbers only
    first = rows[0]
    assert (first["run"], first["status"], first["loss.temperature"], first["seed"]) == ("0", "ok", "1", "0")
    assert float(first["student.accuracy"]) == 0.80
    assert float(first["retention"]) == pytest.approx(0.80 / TEACHER_ACCURACY)
    last = rows[-1]
    assert last["run"] == "10" and last["status"].startswith("missing: no metrics.json")
    assert last["loss.temperature"] == "8" and last["student.accuracy"] == ""


def test_plot_is_a_png(sweep_dir):
    report = report_sweep(sweep_dir)
    assert report.plot == sweep_dir / "report.png"
    assert report.plot.read_bytes()[:8] == PNG_MAGIC and report.plot.stat().st_size > 5000


def test_other_metric_lower_is_better_and_out_folder(sweep_dir, tmp_path):
    report = report_sweep(sweep_dir, metric="latency_ms", lower_is_better=True, out=tmp_path / "reports")
    assert report.summary.best.label == "loss.temperature=1" and report.summary.best.mean == pytest.approx(6.0)
    assert report.summary.best.std == 0.0
    assert {path.name for path in (tmp_path / "reports").iterdir()} == {"report.md", "report.csv", "report.png"}
    assert not (sweep_dir / "report.md").exists()
    assert "`latency_ms` (lower is better)" in (tmp_path / "reports" / "report.md").read_text()
    retention = report_sweep(sweep_dir, metric="retention").summary
    assert retention.best.label == "loss.temperature=2"
    assert retention.best.mean == pytest.approx(0.86 / TEACHER_ACCURACY)
    dotted = report_sweep(sweep_dir, metric="teacher.accuracy").summary
    assert dotted.settings[0].mean == pytest.approx(TEACHER_ACCURACY) and dotted.settings[0].std == 0.0


def test_two_swept_keys_one_line_each_and_single_seed(tmp_path):
    root = tmp_path / "sweep"
    number = 0
    for temperature in (1, 2, 4):
        for weight in (0.5, 0.9):
            accuracy = 0.8 + temperature / 100 + weight / 10
            make_run(root, str(number), [f"loss.temperature={temperature}", f"loss.terms.kd.weight={weight}"],
                     metrics_for(accuracy))
            number += 1
    report = report_sweep(root)
    assert report.summary.setting_keys == ["loss.temperature", "loss.terms.kd.weight"]
    assert report.summary.replicates == []
    assert all(setting.n == 1 and setting.std is None for setting in report.summary.settings)
    assert report.summary.best.label == "loss.temperature=4 loss.terms.kd.weight=0.9"
    assert "| 4 | 0.9 | 0.9300 ± - ★ | 1 |" in report.markdown.read_text()
    assert report.plot.read_bytes()[:8] == PNG_MAGIC


def test_categorical_settings_plot(tmp_path):
    root = tmp_path / "sweep"
    for number, (loss, seed, accuracy) in enumerate(
        [("kd", 0, 0.81), ("kd", 1, 0.83), ("kd_ce", 0, 0.84), ("kd_ce", 1, 0.84)]
    ):
        make_run(root, str(number), [f"loss={loss}", f"seed={seed}"], metrics_for(accuracy))
    report = report_sweep(root)
    assert [s.label for s in report.summary.settings] == ["loss=kd", "loss=kd_ce"]
    assert report.summary.best.label == "loss=kd_ce" and report.summary.best.std == 0.0
    assert report.plot.read_bytes()[:8] == PNG_MAGIC


def test_seed_only_sweep_is_one_setting(tmp_path):
    root = tmp_path / "sweep"
    for seed, accuracy in enumerate([0.80, 0.84]):
        make_run(root, str(seed), ["experiment=quickstart", f"seed={seed}"], metrics_for(accuracy))
    summary = report_sweep(root).summary
    assert [(s.label, s.n) for s in summary.settings] == [("(all runs)", 2)]
    assert summary.best.mean == pytest.approx(0.82) and summary.best.std == pytest.approx(math.sqrt(0.0008))


#: What an older distill left in a refused run's folder: .hydra/ and the log with the problems.
REFUSED_LOG = """[2026-01-31 12:00:01,000][distill][ERROR] - 2 problem(s) in the run config:
  - loss.temperature=0: must be a number > 0 (typical: 1, 2, 4, 8); it divides the logits before the softmax
  - data.train_file='/nonexistent.tsv': no such file
"""


def test_refused_run_is_listed_as_refused_never_as_a_setting(tmp_path, capsys):
    """A folder of single runs with a refused one among them (the issue's `Best setting: loss.temperature=-
    data.train_file=-`): the refused run's overrides neither make settings nor blank the best one's."""
    root = tmp_path / "runs"
    make_run(root, "12-00-00", ["experiment=quickstart"], metrics_for(0.86))
    make_run(root, "12-10-00", ["experiment=quickstart", "loss.temperature=4"], metrics_for(0.84))
    refused = make_run(root, "12-20-00", ["experiment=quickstart", "loss.temperature=0",
                                          "data.train_file=/nonexistent.tsv"], None)
    (refused / "cli.log").write_text(REFUSED_LOG)
    report = report_sweep(root)
    summary = report.summary
    assert [run.name for run in report.sweep.refused] == ["12-20-00"] and report.sweep.missing == []
    assert summary.setting_keys == ["loss.temperature"]  # data.train_file came only from the refused run
    assert [s.label for s in summary.settings] == ["loss.temperature=4", "(no override of loss.temperature)"]
    assert summary.best.label == "(no override of loss.temperature)"
    text = report.markdown.read_text()
    best = next(line for line in text.splitlines() if "Best setting" in line)
    assert "=-" not in best and "data.train_file" not in best
    assert "Runs: 2 complete, 0 missing, 1 refused by validation" in text
    refused_section = text.split("## Refused by validation")[1]
    assert "- `12-20-00` (" in refused_section and "loss.temperature=0: must be a number > 0" in refused_section
    assert "data.train_file='/nonexistent.tsv': no such file" in refused_section
    assert "12-20-00" not in text.split("## Runs")[1].split("## Refused by validation")[0]
    rows = {row["run"]: row for row in csv.DictReader(report.csv.open())}
    assert rows["12-20-00"]["status"].startswith("refused by validation: loss.temperature=0")
    assert report_main(["sweep", str(root)]) == 0
    out = capsys.readouterr().out
    assert "2 run(s) complete, 0 missing, 1 refused by validation" in out
    assert "refused: 12-20-00: refused by validation: loss.temperature=0" in out
    assert "Best setting: (no override of loss.temperature) (accuracy 0.8600" in out


def test_best_setting_names_only_the_keys_its_runs_set(tmp_path):
    root = tmp_path / "sweep"
    make_run(root, "0", ["loss.temperature=2"], metrics_for(0.86))
    make_run(root, "1", ["loss.temperature=4", "data.train_limit=1000"], metrics_for(0.84))
    make_run(root, "2", ["loss.temperature=4"], None)  # failed without a refusal: still a (missing) run
    report = report_sweep(root)
    assert report.summary.best.label == "loss.temperature=2"
    assert "**Best setting: loss.temperature=2 (accuracy 0.8600" in report.markdown.read_text()
    assert [run.name for run in report.sweep.missing] == ["2"] and report.sweep.refused == []


def test_overrides_are_parsed_as_hydra_does():
    parsed = parse_overrides(["loss.temperature=4", "++trainer.min_steps=10", "+extra=a", "~loss.terms.cos",
                              "data@x=sst2", "module.metrics=[accuracy,f1]"])
    assert {key: (o.text, o.value) for key, o in parsed.items()} == {
        "loss.temperature": ("4", 4),
        "trainer.min_steps": ("10", 10),
        "extra": ("a", "a"),
        "loss.terms.cos": ("~", None),
        "data@x": ("sst2", "sst2"),
        "module.metrics": ("[accuracy,f1]", ["accuracy", "f1"]),
    }


def test_cli_prints_the_table_and_best_and_writes_files(sweep_dir, capsys):
    assert report_main(["sweep", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "9 run(s) complete, 1 missing" in out and "missing: 10: no metrics.json" in out
    assert "| 2 | 0.8600 ± 0.0100 ★ | 3 |" in out
    assert "Best setting: loss.temperature=2 (accuracy 0.8600 ± 0.0100, n=3)" in out
    assert f"wrote {sweep_dir / 'report.png'}" in out


def test_console_script_with_metric_and_out(sweep_dir, tmp_path):
    script = Path(sys.executable).with_name("distill-report")
    assert script.exists(), "the `distill-report` console script is not installed (pip install -e .)"
    result = subprocess.run(
        [str(script), "sweep", str(sweep_dir), "--metric", "teacher_agreement", "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Best setting: loss.temperature=2 (teacher_agreement 0.9100 ± 0.0100, n=3)" in result.stdout
    assert (tmp_path / "r" / "report.png").read_bytes()[:8] == PNG_MAGIC


def test_runs_with_old_and_new_agreement_names_report_together(tmp_path):
    """Runs written before the rename (student.teacher_agreement) and after (student.agreement)."""
    root = tmp_path / "sweep"
    old, new = metrics_for(0.80), metrics_for(0.85)
    new["student"]["agreement"] = new["student"].pop("teacher_agreement")
    make_run(root, "0", ["loss.temperature=1"], old)
    make_run(root, "1", ["loss.temperature=2"], new)
    for name in ("agreement", "teacher_agreement", "student.agreement"):
        report = report_sweep(root, metric=name, out=tmp_path / name)
        assert [setting.scores for setting in report.summary.settings] == [[pytest.approx(0.85)], [pytest.approx(0.90)]]
        assert f"Best setting: loss.temperature=2 ({name} 0.9000, n=1)" in report.markdown.read_text()
    rows = list(csv.DictReader(report.csv.open()))
    assert [float(row["student.agreement"]) for row in rows] == [pytest.approx(0.85), pytest.approx(0.90)]


@pytest.mark.parametrize("case", ["empty", "all_missing", "unknown_metric", "not_a_folder"])
def test_errors_name_the_folder_and_exit_2(case, tmp_path, capsys):
    root = tmp_path / "sweep"
    root.mkdir()
    argv = ["sweep", str(root)]
    if case == "all_missing":
        make_run(root, "0", ["seed=0"], None)
    elif case == "unknown_metric":
        make_run(root, "0", ["seed=0"], metrics_for(0.8))
        argv += ["--metric", "bleu"]
    elif case == "not_a_folder":
        argv = ["sweep", str(root / "nope")]
    with pytest.raises(SweepError):
        report_sweep(argv[1], metric=argv[3] if len(argv) > 2 else None)
    assert report_main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("distill-report: error: ") and argv[1] in error
    assert not (root / "report.md").exists()


def test_run_stopped_by_a_nonfinite_loss_is_missing_with_its_message_not_refused(tmp_path):
    root = tmp_path / "sweep"
    make_run(root, "0", ["optimizer.lr=1e-4"], metrics_for(0.80))
    failed = make_run(root, "1", ["optimizer.lr=10"], None)
    (failed / "cli.log").write_text(
        "[2026-01-31 12:00:00,000][distill][ERROR] - non-finite loss at training step 3 (epoch 0, batch 3): "
        "term(s) kd, ce; non-finite: the student's outputs (logits). Stopped before the optimizer step.\n"
    )
    sweep = report_sweep(root).sweep
    assert sweep.refused == [] and [run.name for run in sweep.missing] == ["1"]
    assert sweep.missing[0].problem.startswith("stopped: non-finite loss at training step 3")


def test_preempted_run_is_missing_with_its_message_not_refused(tmp_path):
    root = tmp_path / "sweep"
    make_run(root, "0", ["optimizer.lr=1e-4"], metrics_for(0.80))
    stopped = make_run(root, "1", ["optimizer.lr=1e-3"], None)
    (stopped / "cli.log").write_text(
        "[2026-01-31 12:00:00,000][distill][ERROR] - stopped by a termination signal at step 7; saved a full "
        "checkpoint at step 7: sweep/1/checkpoints/last.ckpt\nResume it (same overrides; output goes to a new "
        "run folder): distill optimizer.lr=1e-3 ckpt_path=auto\n"
    )
    sweep = report_sweep(root).sweep
    assert sweep.refused == [] and [run.name for run in sweep.missing] == ["1"]
    assert sweep.missing[0].problem.startswith("stopped: stopped by a termination signal at step 7")

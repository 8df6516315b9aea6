"""The `distill` command end to end on tiny models and real SST-2 rows (distill/cli.py, distill/train.py)."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Checkpoint, ProgressBar
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import TINY_RUN, compose
from distill.train import make_trainer, train
from distill.validation import check_run_config

CONF_DIR = Path(__file__).resolve().parents[1] / "distill" / "conf"


def run_cli(args, tmp_path, timeout=300):
    env = {
        **os.environ,
        "DISTILL_LOG_DIR": str(tmp_path / "logs"),
        "DISTILL_CACHE_DIR": str(tmp_path / "cache"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    return subprocess.run(
        [sys.executable, "-m", "distill", *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path,
    )


def test_help_shows_groups_options_and_examples(tmp_path):
    result = run_cli(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    for line in ("teacher: bert_base, finetuned, minilm_l6", "loss: ce, kd, kd_ce, kd_ce_cos, kd_ce_hidden_mse",
                 "trainer: cpu, ddp, default, gpu", "distill -m experiment=quickstart loss.temperature=1,2,4,8"):
        assert line in result.stdout
    (experiments,) = [line for line in result.stdout.splitlines() if line.strip().startswith("experiment: ")]
    for name in ("distilbert_general", "distilbert_general_hub", "minilm_task", "quickstart", "tinybert_task"):
        assert name in experiments.split(": ", 1)[1].split(", ")
    console_script = Path(sys.executable).with_name("distill")
    assert console_script.exists(), "the `distill` console script is not installed"


#: Experiments that start from an earlier run's student, named on the command line.
NEEDS_A_TRAINED_STUDENT = {"sst2_qat_int2_from_fp32", "sst2_qat_ternary_from_fp32"}


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes_and_validates(experiment, tmp_path):
    overrides = [f"experiment={experiment}"]
    if experiment in NEEDS_A_TRAINED_STUDENT:
        # Refused before weights load, naming the field; the teacher follows the student's path.
        teacher, student = check_run_config(compose(overrides, tmp_path))[0]
        assert student.startswith("student: cannot be built") and "student.name_or_path" in student
        assert teacher.startswith("teacher: cannot be built") and "teacher.name_or_path" in teacher
        overrides.append("student.name_or_path=outputs/fp32/student")
    problems, _, _ = check_run_config(compose(overrides, tmp_path))
    assert problems == []


def test_tiny_run_writes_metrics_student_logs_and_a_student_sized_checkpoint(data_dir, tmp_path):
    cfg = compose([*TINY_RUN, "callbacks=default", "callbacks.progress_bar=null"], tmp_path)
    summary = train(cfg)
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["metric"] == "accuracy" and set(metrics) >= {"teacher", "student", "retention", "speedup"}
    assert metrics["retention"] == pytest.approx(metrics["student"]["accuracy"] / metrics["teacher"]["accuracy"])
    assert metrics["student"]["params"] < metrics["teacher"]["params"]
    assert summary["student"]["accuracy"] == metrics["student"]["accuracy"]
    # The student loads with plain transformers, tokenizer included, and predicts.
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "student")
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "student")
    logits = model(**tokenizer(["a gripping , funny film"], return_tensors="pt")).logits
    assert logits.shape == (1, 2)
    # Per-term training logs.
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    for column in ("train/loss/kd", "train/loss/kd_weighted", "train/loss/ce", "train/loss/total", "val/accuracy",
                   "val/agreement/teacher"):
        assert column in header
    assert "val/teacher_accuracy" not in header  # renamed: it read as the teacher's own accuracy
    assert 0 <= metrics["student"]["agreement"] <= 1
    # The checkpoint holds the student, not the teacher.
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert not any("teacher" in key for key in checkpoint["state_dict"])
    assert checkpoint["hyper_parameters"]["config"]["teacher"]["config"]["hidden_size"] == 32


def test_resume_with_ckpt_path_continues_from_the_saved_step(data_dir, tmp_path):
    first = compose([*TINY_RUN, "callbacks=default", "callbacks.progress_bar=null", "trainer.max_steps=2", "trainer.max_epochs=5"], tmp_path / "a")
    train(first)
    checkpoint = tmp_path / "a" / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=False)["global_step"] == 2
    resumed = compose(
        [*TINY_RUN, "callbacks=default", "callbacks.progress_bar=null", "trainer.max_steps=4", "trainer.max_epochs=5", f"ckpt_path={checkpoint}"],
        tmp_path / "b",
    )
    train(resumed)
    assert torch.load(tmp_path / "b" / "run" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4


@pytest.mark.parametrize(
    "flag, dropped",
    [("trainer.enable_progress_bar=false", ProgressBar), ("trainer.enable_checkpointing=false", Checkpoint)],
)
def test_a_trainer_flag_turned_off_drops_the_default_callback_it_clashes_with(flag, dropped, tmp_path, caplog):
    # Lightning refuses the flag together with the callback (MisconfigurationException in the Trainer).
    caplog.set_level(logging.INFO, logger="distill.train")
    cfg = compose(["callbacks=default", "trainer.enable_progress_bar=true", flag], tmp_path)
    trainer = make_trainer(cfg)
    assert not any(isinstance(callback, dropped) for callback in trainer.callbacks)
    assert f"{flag}: running without" in caplog.text


def test_a_run_with_default_callbacks_and_progress_bar_and_checkpoints_off(data_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="distill.train")
    cfg = compose([*TINY_RUN, "callbacks=default", "trainer.enable_checkpointing=false"], tmp_path)
    summary = train(cfg)
    assert summary["student"]["accuracy"] is not None
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert "trainer.enable_progress_bar=false: running without StepProgressBar" in caplog.text
    assert "trainer.enable_checkpointing=false: running without ModelCheckpoint" in caplog.text


def test_bad_input_exits_with_the_message_not_a_traceback(tmp_path):
    result = run_cli([*TINY_RUN, "loss.temperature=-1"], tmp_path)
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "loss.temperature=-1" in output and "Traceback" not in output


def test_multirun_sweep_writes_one_run_folder_per_setting(data_dir, tmp_path):
    result = run_cli(["-m", *TINY_RUN, "loss.temperature=1,4", "report.save_student=false"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted((tmp_path / "logs" / "multiruns").glob("*/*/*/metrics.json"))
    assert len(runs) == 2
    objectives = [json.loads(path.read_text())["objective"] for path in runs]
    assert any("(T=1)" in text for text in objectives) and any("(T=4)" in text for text in objectives)


def test_regression_task_reports_correlations(data_dir, tmp_path):
    cfg = compose([*TINY_RUN, "data=stsb", "loss=regression", "module.metrics=[pearson,spearman]"], tmp_path)
    summary = train(cfg)
    assert summary["metric"] == "pearson"
    for model in ("teacher", "student"):
        assert -1.0 <= summary[model]["pearson"] <= 1.0 and -1.0 <= summary[model]["spearman"] <= 1.0
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "student").config.num_labels == 1


def test_sentence_pairs_and_matthews_correlation(data_dir, tmp_path):
    summary = train(compose([*TINY_RUN, "data=mrpc", "module.metrics=[matthews,accuracy,f1]"], tmp_path))
    assert summary["metric"] == "matthews" and -1.0 <= summary["student"]["matthews"] <= 1.0


def test_bf16_teacher_with_float32_losses(data_dir, tmp_path):
    cfg = compose([*TINY_RUN, "teacher.dtype=bfloat16", "trainer.log_every_n_steps=1"], tmp_path)
    train(cfg)
    header, *rows = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()
    column = header.split(",").index("train/loss/kd")
    values = [float(row.split(",")[column]) for row in rows if row.split(",")[column]]
    assert values and all(value == value and value >= 0 for value in values)  # finite, non-negative KL


def test_wandb_logger_offline(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    train(compose([*TINY_RUN, "logger=wandb", "report.save_student=false"], tmp_path))
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


def test_hidden_state_mse_with_projections_trains_checkpoints_and_exports_without_them(data_dir, tmp_path):
    cfg = compose(
        [*TINY_RUN, "loss=kd_ce_hidden_mse", "++student.config.hidden_size=16", "callbacks=default",
         "callbacks.progress_bar=null", "trainer.log_every_n_steps=1"],
        tmp_path,
    )
    train(cfg)
    run_dir = tmp_path / "run"
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    projection_keys = sorted(key for key in state if key.startswith("loss.terms.hidden.projections."))
    # uniform map for 1 student layer vs 2 teacher layers: (0, 0) and (1, 2), one projection each
    assert projection_keys == [f"loss.terms.hidden.projections.{i}.{p}" for i in (0, 1) for p in ("bias", "weight")]
    assert state["loss.terms.hidden.projections.0.weight"].shape == (32, 16)
    exported = AutoModelForSequenceClassification.from_pretrained(run_dir / "student")
    assert exported.config.hidden_size == 16
    assert not any("projection" in name for name, _ in exported.named_parameters())
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss/hidden" in header and "train/loss/hidden_weighted" in header


def test_scheduled_weight_is_applied_and_logged(data_dir, tmp_path):
    cfg = compose(
        [*TINY_RUN, "loss=kd_ce", "trainer.log_every_n_steps=1",
         "++loss.schedules.kd={kind: linear, start: 0.0, end: 1.0}"],
        tmp_path,
    )
    train(cfg)
    lines = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()
    column = lines[0].split(",").index("train/schedule/kd")
    values = [float(row.split(",")[column]) for row in lines[1:] if row.split(",")[column]]
    assert values == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])


@pytest.mark.parametrize(
    ("loss", "extra", "term"),
    [
        ("tinybert_intermediate", ["++student.config.hidden_size=16"], "attention"),
        ("minilm", ["++student.config.hidden_size=24", "++student.config.num_attention_heads=3",
                    "loss.terms.relations.loss.relation_heads=4"], "relations"),
    ],
)
def test_attention_losses_train_end_to_end_with_fast_attention(loss, extra, term, data_dir, tmp_path):
    cfg = compose([*TINY_RUN, f"loss={loss}", *extra, "trainer.log_every_n_steps=1"], tmp_path)
    summary = train(cfg)
    header, *rows = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()
    column = header.split(",").index(f"train/loss/{term}")
    values = [float(row.split(",")[column]) for row in rows if row.split(",")[column]]
    assert values and all(value >= 0 for value in values)
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "student")
    assert student.config._attn_implementation != "eager"  # the default kernel stayed on
    assert summary["student"]["params"] < summary["teacher"]["params"]


def test_stages_run_in_order_on_one_student(data_dir, tmp_path):
    cfg = compose(
        ["experiment=tinybert_task", *TINY_RUN, "callbacks=default", "callbacks.progress_bar=null",
         "stages.intermediate.max_steps=3", "stages.prediction.max_steps=2", "++stages.prediction.lr=0.0",
         "trainer.log_every_n_steps=1"],
        tmp_path,
    )
    summary = train(cfg)
    run_dir = tmp_path / "run"
    assert summary["stages"] == ["intermediate", "prediction"]
    first = torch.load(run_dir / "checkpoints" / "intermediate" / "last.ckpt", weights_only=False)
    second = torch.load(run_dir / "checkpoints" / "prediction" / "last.ckpt", weights_only=False)
    assert first["global_step"] == 3 and second["global_step"] == 2
    assert "train/loss/attention" in (run_dir / "csv" / "intermediate" / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss/soft_ce" in (run_dir / "csv" / "prediction" / "metrics.csv").read_text().splitlines()[0]
    # Stage 2 ran at lr 0, so the exported student is exactly stage 1's: it continued from it.
    exported = AutoModelForSequenceClassification.from_pretrained(run_dir / "student").state_dict()
    for key, value in first["state_dict"].items():
        if key.startswith("student."):
            assert torch.equal(exported[key.removeprefix("student.")], value), key


def test_module_output_loss_by_dotted_path_trains_end_to_end(data_dir, tmp_path):
    cfg = compose([*TINY_RUN, "loss=kd_ce_module", "++student.config.hidden_size=16", "trainer.log_every_n_steps=1",
                   "report.save_student=false"], tmp_path)
    summary = train(cfg)
    header, *rows = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()
    column = header.split(",").index("train/loss/module")
    values = [float(row.split(",")[column]) for row in rows if row.split(",")[column]]
    assert len(values) == 4 and all(value > 0 for value in values)
    assert "module: mean_pairs MSE(module_s W, module_t)" in summary["objective"]

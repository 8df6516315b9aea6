"""General (pre-training) distillation end to end on tiny models: task=masked_lm and
task=feature_extraction through train() (distill/train.py, distill/module.py, distill/data/mlm.py)."""

import json

import pytest
import torch
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from conftest import TINY_RUN, compose
from distill.train import train


def corpus(tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    text = tmp_path / "text.tokens"
    lines = [f" = Heading {i} = \n\n the film number {i} was a quiet , sad and beautiful story about loss ." for i in range(40)]
    text.write_text("\n".join(lines) + "\n")
    return [f"data.train_sources=[{{file:'{text}'}}]", f"data.eval_sources=[{{file:'{text}'}}]"]


def general_run(tmp_path, task, loss, extra=()):
    return compose(
        [*TINY_RUN, "data=wikitext_sst2_text", *corpus(tmp_path), f"task={task}", f"loss={loss}", "module.metrics=[]",
         "data.max_length=32", *extra],
        tmp_path,
    )


def csv_columns(run_dir):
    return (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")


def test_masked_lm_triple_loss_trains_reports_eval_loss_and_saves_a_masked_lm_student(tmp_path):
    summary = train(general_run(tmp_path, "masked_lm", "mlm_triple"))
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["metric"] == "eval_loss" and summary["metric"] == "eval_loss"
    student, teacher = metrics["student"], metrics["teacher"]
    assert set(student["eval_terms"]) == {"kd", "mlm", "cos"}
    expected = 5.0 * student["eval_terms"]["kd"] + 2.0 * student["eval_terms"]["mlm"] + student["eval_terms"]["cos"]
    assert student["eval_loss"] == pytest.approx(expected, rel=1e-4)
    # mlm_ce averages over every masked eval token, the term over batches: close, not equal.
    assert student["mlm_ce"] == pytest.approx(student["eval_terms"]["mlm"], rel=0.05)
    assert teacher["mlm_ce"] > 0 and "latency_ms" in teacher and "retention" not in metrics
    for column in ("train/loss/kd", "train/loss/mlm", "train/loss/cos", "val/loss/total", "val/mlm_ce", "val/teacher/mlm_ce"):
        assert column in csv_columns(run_dir)
    model = AutoModelForMaskedLM.from_pretrained(run_dir / "student")
    assert model(input_ids=torch.tensor([[101, 103, 102]])).logits.shape == (1, 3, 30522)


def test_feature_extraction_student_starts_a_task_run_with_a_fresh_head(data_dir, tmp_path):
    summary = train(general_run(tmp_path / "general", "feature_extraction", "pretrain_hidden", ["data.mlm_probability=0"]))
    student_dir = tmp_path / "general" / "run" / "student"
    assert summary["metric"] == "eval_loss" and summary["student"]["eval_loss"] > 0
    assert set(summary["student"]["eval_terms"]) == {"cos", "hidden"}
    base = AutoModel.from_pretrained(student_dir)
    assert type(base).__name__ == "BertModel"
    # A classification model from the base checkpoint: encoder loaded, classifier new.
    classifier, info = AutoModelForSequenceClassification.from_pretrained(student_dir, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    assert torch.equal(classifier.bert.encoder.layer[0].attention.self.query.weight, base.encoder.layer[0].attention.self.query.weight)
    # ... and a task run takes it as student.name_or_path (a fresh head is fine for a student).
    task = train(compose([*TINY_RUN, "student=minilm_l6", f"student.name_or_path={student_dir}", "loss=kd_ce"], tmp_path / "task"))
    assert task["metric"] == "accuracy" and task["student"]["params"] == summary["student"]["params"] + 32 * 2 + 2

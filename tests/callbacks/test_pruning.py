"""The pruning callbacks in runs: masks that hold through AdamW steps and resume, the figures in
metrics.json, FFN pruning's physically smaller export, and pruning composed with QAT."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_RUN, compose
from safetensors.torch import load_file
from test_resume import CHECKPOINTS, assert_resume_is_exact

from distill.errors import ConfigError
from distill.export import load_student
from distill.train import build_run, train

GRADUAL_70 = ["compress=prune_magnitude", "compress.prune.sparsity=0.7", "compress.prune.start_step=1",
              "compress.prune.end_step=4", "compress.prune.every=1"]
PRUNED = [f"bert.encoder.layer.0.{name}.weight" for name in
          ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
           "intermediate.dense", "output.dense")] + ["bert.pooler.dense.weight"]


def _accuracy_of(model, datamodule) -> float:
    correct = total = 0
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            labels = batch.pop("labels")
            correct += int((model(**batch).logits.argmax(-1) == labels).sum())
            total += len(labels)
    return correct / total


def test_gradual_pruning_keeps_pruned_weights_zero_to_the_end_and_reports_the_sparsity(data_dir, tmp_path):
    summary = train(compose([*TINY_RUN, *GRADUAL_70, "trainer.max_epochs=3", "trainer.max_steps=7"], tmp_path))
    compression = summary["student"]["compression"]
    assert compression["method"] == "prune-magnitude" and compression["format"] == "70% magnitude (layer)"
    assert compression["sparsity"] == pytest.approx(0.7, abs=0.002)
    assert sorted(compression["sparsity_per_parameter"]) == sorted(PRUNED)
    weights = load_file(tmp_path / "run" / "student" / "model.safetensors")
    for name in PRUNED:  # three AdamW steps after the last mask update: still exactly 70% zeros
        assert float((weights[name] == 0).float().mean()) == pytest.approx(0.7, abs=0.01), name
    assert float((weights["classifier.weight"] == 0).float().mean()) == 0.0  # excluded
    logged = (tmp_path / "run" / "csv").rglob("metrics.csv")
    header = next(iter(logged)).read_text().splitlines()[0]
    assert "prune/sparsity" in header and "prune/sparsity/bert.encoder.layer.0.output.dense.weight" in header


def test_gradual_2_of_4_rises_on_the_cubic_and_ends_exactly_on_the_pattern(data_dir, tmp_path):
    gradual_2_of_4 = ["compress=prune_2of4", "compress.prune.schedule=gradual", "compress.prune.start_step=1",
                      "compress.prune.end_step=4", "compress.prune.every=1"]
    summary = train(compose([*TINY_RUN, *gradual_2_of_4, "trainer.max_epochs=3", "trainer.max_steps=7"], tmp_path))
    assert summary["student"]["compression"]["format"] == "2:4 wanda"
    weights = load_file(tmp_path / "run" / "student" / "model.safetensors")
    for name in PRUNED:  # after three more AdamW steps: 2 of every 4 consecutive inputs, no more, no fewer
        kept = (weights[name] != 0).reshape(weights[name].shape[0], -1, 4).sum(-1)
        assert (kept == 2).all(), name
    (csv_file,) = (tmp_path / "run" / "csv").rglob("metrics.csv")
    rows = [row.split(",") for row in csv_file.read_text().splitlines()]
    column = rows[0].index("prune/sparsity")
    logged = [float(row[column]) for row in rows[1:] if row[column]]
    assert logged == sorted(logged) and logged[-1] == pytest.approx(0.5, abs=1e-6)
    assert any(0.0 < value < 0.49 for value in logged)  # on the way: part of the pattern, every group still >= 2


def test_a_resumed_pruning_run_restores_its_masks_and_ends_with_the_same_weights(data_dir, tmp_path):
    # Masks change before steps 1..4; the checkpoint is written after step 3 (mid-schedule: step 2 was the last update).
    overrides = ["data.train_limit=40", "data.batch_size=8", *GRADUAL_70]
    assert_resume_is_exact(tmp_path, overrides, total=6, stop=3)
    checkpoint = torch.load(tmp_path / "whole" / "run" / "checkpoints" / "step3.ckpt", weights_only=False)
    (state,) = [value for key, value in checkpoint["callbacks"].items() if key.startswith("Pruning")]
    assert state["last_update"] == 2 and set(state["masks"]) == set(PRUNED)
    weights = checkpoint["state_dict"]
    for name, mask in state["masks"].items():
        assert (weights[f"student.{name}"][~mask] == 0).all()


def test_resuming_with_other_pruning_settings_is_refused(data_dir, tmp_path):
    common = [*TINY_RUN, *CHECKPOINTS, "data.train_limit=16", "data.batch_size=8", "trainer.max_steps=2"]
    train(compose([*common, *GRADUAL_70], tmp_path / "first"))
    checkpoint = tmp_path / "first" / "run" / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=r"compress.prune .*differs in \['sparsity'\]"):
        train(compose([*common, *GRADUAL_70, "compress.prune.sparsity=0.5", "trainer.max_steps=4",
                       f"ckpt_path={checkpoint}"], tmp_path / "b"))


def test_ffn_pruning_exports_a_smaller_student_that_transformers_loads_with_the_runs_accuracy(data_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    overrides = [*TINY_RUN, "compress=prune_ffn", "compress.prune.sparsity=0.5", "compress.prune.start_step=1",
                 "compress.prune.importance=gradient"]
    summary = train(compose([*overrides, "trainer.max_steps=3"], tmp_path))
    compression = summary["student"]["compression"]
    assert compression["intermediate_size"] == {"before": 64, "after": 32} and compression["physically_removed"]
    folder = tmp_path / "run" / "student"
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert model.config.intermediate_size == 32
    assert model.bert.encoder.layer[0].output.dense.weight.shape == (32, 32)
    assert summary["student"]["params"] == sum(p.numel() for p in model.parameters())
    _, datamodule, _, _ = build_run(compose(overrides, tmp_path / "again"))
    assert _accuracy_of(model, datamodule) == pytest.approx(summary["student"]["accuracy"], abs=1e-6)


def test_2_of_4_masks_survive_int8_qat_into_the_integer_export(data_dir, tmp_path):
    overrides = ["compress=[prune_2of4,qat_int8]", "compress.prune.start_step=1", "compress.prune.criterion=magnitude"]
    summary = train(compose([*TINY_RUN, *overrides, "trainer.max_steps=4"], tmp_path))
    steps = summary["student"]["compression"]["steps"]
    assert [step["method"] for step in steps] == ["prune-magnitude", "qat"]
    model = load_student(tmp_path / "run" / "student")
    for name in PRUNED:
        module = model.get_submodule(name.removesuffix(".weight"))
        weight = module.weight.dequantize() if hasattr(module.weight, "dequantize") else module.weight
        groups = (weight != 0).reshape(weight.shape[0], -1, 4).sum(-1)
        assert (groups <= 2).all(), name  # at most 2 of every 4 after int8 conversion


def test_metrics_json_records_the_pruning(data_dir, tmp_path):
    train(compose([*TINY_RUN, "compress=prune_oneshot", "compress.prune.sparsity=0.5", "trainer.max_steps=2"], tmp_path))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    compression = metrics["student"]["compression"]
    assert compression["schedule"] == "after_training" and compression["sparsity"] == pytest.approx(0.5, abs=0.002)
    assert compression["pruned_parameters"] == round(0.5 * compression["masked_parameters"])

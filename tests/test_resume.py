"""A run stopped at any step, mid-epoch included, resumes to the weights of an uninterrupted run.

Each case trains N steps in one go, saving a checkpoint at step k < N (k mid-epoch), resumes from
that checkpoint to N, and compares the student's weights (atol 1e-6). Dropout is on (the tiny
models keep BERT's 0.1), so the global RNG must be restored too. See distill/data/resumable.py.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_RUN, compose
from safetensors.torch import load_file
from test_general_distillation import corpus

from distill.train import train

CHECKPOINTS = ["callbacks=default", "callbacks.progress_bar=null", "callbacks.learning_rate_monitor=null"]


def checkpoint_weights(checkpoint):
    state = torch.load(checkpoint, weights_only=False)["state_dict"]
    return {name.removeprefix("student."): tensor for name, tensor in state.items() if name.startswith("student.")}


def final_weights(run_dir):
    """The student a run ends with (``student/``, written after training; a quantized student's
    integer codes and scales when a ``compress`` callback converted it)."""
    folder = run_dir / "student"
    quantized = folder / "quantized.safetensors"
    return load_file(quantized if quantized.exists() else folder / "model.safetensors")


def assert_resume_is_exact(tmp_path, overrides, total, stop):
    """Runs ``total`` steps with a checkpoint at step ``stop``, resumes from it, compares the weights.

    The interrupted run is the uninterrupted one's checkpoint at ``stop`` (as a preempted run's
    would be): a run with ``max_steps=stop`` would have another learning-rate and loss-weight
    schedule, which are spread over ``max_steps``.
    """
    common = [*TINY_RUN, *CHECKPOINTS, "trainer.max_epochs=20", f"trainer.max_steps={total}", *overrides]
    train(compose([*common, f"callbacks.model_checkpoint.every_n_train_steps={stop}",
                   "callbacks.model_checkpoint.save_top_k=-1"], tmp_path / "whole"))
    checkpoint = tmp_path / "whole" / "run" / "checkpoints" / f"step{stop}.ckpt"
    assert torch.load(checkpoint, weights_only=False)["global_step"] == stop
    train(compose([*common, f"ckpt_path={checkpoint}"], tmp_path / "resumed"))
    whole, resumed = final_weights(tmp_path / "whole" / "run"), final_weights(tmp_path / "resumed" / "run")
    first = checkpoint_weights(checkpoint)
    assert whole.keys() == resumed.keys() and whole.keys() & first.keys()
    # The resumed run trained on: its weights are not the checkpoint's.
    assert any(not torch.equal(first[name], resumed[name]) for name in whole.keys() & first.keys())
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], atol=1e-6, rtol=0, msg=name)


# 40 examples in batches of 8: 5 steps per epoch. Stopping at 3 is mid-epoch 0, at 7 mid-epoch 1.
@pytest.mark.parametrize("stop", [3, 7])
def test_quickstart_like_run_resumes_mid_epoch_to_the_same_weights(data_dir, tmp_path, stop):
    overrides = ["data.train_limit=40", "data.batch_size=8", "data.group_by_length=true", "data.shuffle=true"]
    assert_resume_is_exact(tmp_path, overrides, total=9, stop=stop)


def test_transfer_set_run_resumes_mid_epoch_to_the_same_weights(data_dir, tmp_path):
    # 16 labeled + 40 transfer examples, 4 + 8 a batch: 5 steps an epoch, the labeled pool cycling.
    overrides = ["data.train_limit=16", "data.batch_size=4", "data.transfer.source=train_rest",
                 "data.transfer.ratio=2", "data.transfer.limit=40"]
    assert_resume_is_exact(tmp_path, overrides, total=8, stop=3)


def test_masked_lm_run_resumes_mid_epoch_with_the_same_masks(tmp_path):
    # 40 texts in batches of 8: 5 steps an epoch; masking is on (data.mlm_probability 0.15).
    overrides = ["data=wikitext_sst2_text", *corpus(tmp_path), "task=masked_lm", "loss=mlm_triple",
                 "module.metrics=[]", "data.max_length=32", "data.train_limit=40", "data.batch_size=8"]
    assert_resume_is_exact(tmp_path, overrides, total=8, stop=3)


def test_two_stage_run_resumes_in_its_second_stage_to_the_same_weights(data_dir, tmp_path):
    # Stage intermediate: 3 steps; stage prediction: 5 steps, checkpointed at its step 2 (mid-epoch).
    common = [*TINY_RUN, *CHECKPOINTS, "experiment=tinybert_task", "data.train_limit=40", "data.batch_size=8",
              "trainer.max_epochs=20", "stages.intermediate.max_steps=3", "stages.prediction.max_steps=5"]
    train(compose([*common, "callbacks.model_checkpoint.every_n_train_steps=2",
                   "callbacks.model_checkpoint.save_top_k=-1"], tmp_path / "whole"))
    checkpoint = tmp_path / "whole" / "run" / "checkpoints" / "prediction" / "step2.ckpt"
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["global_step"] == 2 and saved["stage"] == "prediction"
    summary = train(compose([*common, f"ckpt_path={checkpoint}"], tmp_path / "resumed"))
    assert summary["stages"] == ["intermediate", "prediction"] and summary["examples_seen"][0] is None
    whole, resumed = final_weights(tmp_path / "whole" / "run"), final_weights(tmp_path / "resumed" / "run")
    assert whole.keys() == resumed.keys()
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], atol=1e-6, rtol=0, msg=name)


def test_a_checkpoint_without_one_of_the_stages_is_refused(data_dir, tmp_path):
    from distill.errors import ConfigError

    single = [*TINY_RUN, *CHECKPOINTS, "data.train_limit=16", "data.batch_size=8", "trainer.max_steps=1"]
    train(compose(single, tmp_path / "single"))
    checkpoint = tmp_path / "single" / "run" / "checkpoints" / "last.ckpt"
    staged = [*TINY_RUN, *CHECKPOINTS, "experiment=tinybert_task", "data.train_limit=16", "data.batch_size=8",
              f"ckpt_path={checkpoint}"]
    with pytest.raises(ConfigError, match=r"was written in stage None, not one of this run's stages \['intermediate'"):
        train(compose(staged, tmp_path / "staged"))

"""What the compress callbacks share: ``restart_schedule`` starts the learning-rate schedule over
at the step the compression lands (LR rewinding), in a run and in a resumed run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import TINY_RUN, compose
from test_resume import CHECKPOINTS, assert_resume_is_exact

from distill.errors import ConfigError
from distill.train import build_run, train

QAT_RESTARTED = ["compress=qat_int4", "compress.quantize.group_size=16", "compress.quantize.start_step=4",
                 "compress.quantize.restart_schedule=true"]
ONE_SHOT_RESTARTED = ["compress=prune_magnitude", "compress.prune.sparsity=0.5", "compress.prune.schedule=one_shot",
                      "compress.prune.start_step=4", "compress.prune.restart_schedule=true"]


def _rates(overrides, tmp_path, steps: int) -> tuple[list[float], set[int]]:
    """The run's learning rate at each of ``steps`` optimizer steps, once its callbacks set up, and
    the restarts they asked for."""
    module, _, trainer, _ = build_run(compose([*TINY_RUN, *overrides, "optimizer.lr=1e-3", "module.warmup_ratio=0.25"],
                                              tmp_path))
    for callback in trainer.callbacks:
        callback.setup(trainer, module, "fit")
    module._trainer = SimpleNamespace(estimated_stepping_batches=steps)
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates, module.schedule_restarts


@pytest.mark.parametrize("overrides", [QAT_RESTARTED, ONE_SHOT_RESTARTED], ids=["qat", "one-shot-pruning"])
def test_the_schedule_starts_over_at_the_step_the_compression_lands(data_dir, tmp_path, overrides):
    rates, restarts = _rates(overrides, tmp_path, 12)
    assert restarts == {4}
    # [0, 4): warm-up 1 step, decay to 0 at 4; [4, 12): warm-up 2 steps, decay to 0 at 12.
    assert rates == pytest.approx([0, 1e-3, 2e-3 / 3, 1e-3 / 3, 0, 5e-4, 1e-3, 5e-4 * 5 / 3, 5e-4 * 4 / 3, 5e-4,
                                   1e-3 / 3, 5e-4 / 3])
    plain = [item for item in overrides if "restart_schedule" not in item]
    rates, restarts = _rates(plain, tmp_path / "plain", 12)
    assert restarts == set() and rates[3] > rates[4] > rates[5]  # one warm-up, then one decay


def test_gradual_pruning_restarts_where_its_masks_reach_the_target(data_dir, tmp_path):
    gradual = ["compress=prune_magnitude", "compress.prune.sparsity=0.5", "compress.prune.start_step=2",
               "compress.prune.end_step=6", "compress.prune.restart_schedule=true"]
    assert _rates(gradual, tmp_path, 12)[1] == {6}


@pytest.mark.parametrize("overrides, stop", [(QAT_RESTARTED, 2), (QAT_RESTARTED, 6), (ONE_SHOT_RESTARTED, 6)],
                         ids=["qat-before-restart", "qat-after-restart", "pruning-after-restart"])
def test_a_restarted_schedule_resumes_to_the_same_weights(data_dir, tmp_path, overrides, stop):
    assert_resume_is_exact(tmp_path, ["data.train_limit=40", "data.batch_size=8", *overrides], total=8, stop=stop)


def test_resuming_with_another_restart_setting_is_refused(data_dir, tmp_path):
    common = [*TINY_RUN, *CHECKPOINTS, "data.train_limit=16", "data.batch_size=8", "trainer.max_steps=2"]
    train(compose([*common, *ONE_SHOT_RESTARTED], tmp_path / "first"))
    checkpoint = tmp_path / "first" / "run" / "checkpoints" / "last.ckpt"
    plain = [item for item in ONE_SHOT_RESTARTED if "restart_schedule" not in item]
    with pytest.raises(ConfigError, match=r"compress.prune .*differs in \['restart_schedule'\]"):
        train(compose([*common, *plain, "trainer.max_steps=4", f"ckpt_path={checkpoint}"], tmp_path / "b"))

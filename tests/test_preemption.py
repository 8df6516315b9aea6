"""Preemption end to end: a real SIGTERM to `python -m distill`, then `ckpt_path=auto` (distill/callbacks/preemption.py,
distill/resume.py, distill/cli.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY_RUN, compose
from distill.errors import PREEMPTED_EXIT

MAX_STEPS = 200
#: Tiny models on 32 examples (4 batches an epoch), enough steps that a signal lands mid-run; the CSV
#: logger flushes every step so the test can see training under way. No validation during training.
PREEMPTIBLE_RUN = [
    *TINY_RUN,
    "callbacks=default",
    "callbacks.progress_bar=null",
    f"trainer.max_steps={MAX_STEPS}",
    "trainer.max_epochs=-1",
    "trainer.check_val_every_n_epoch=100000",
    "+logger.csv.flush_logs_every_n_steps=1",
    "report.save_student=false",
]


def _env(tmp_path: Path) -> dict:
    return {
        **os.environ,
        "DISTILL_LOG_DIR": str(tmp_path / "logs"),
        "DISTILL_CACHE_DIR": str(tmp_path / "cache"),
        "TOKENIZERS_PARALLELISM": "false",
    }


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "distill", *args], env=_env(tmp_path), cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "distill", *args], env=_env(tmp_path), cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )


def _logged_steps(logs: Path) -> int:
    """Training steps the CSV logger has written so far (0 before training starts)."""
    files = list(logs.glob("runs/*/*/csv/metrics.csv"))
    if not files:
        return 0
    return max(0, len([line for line in files[0].read_text().splitlines() if "train/loss" not in line]) - 1)


def _final_student(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    return {key: value for key, value in state.items() if key.startswith("student.")}


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_ckpt_path_auto_resumes_from_it(data_dir, tmp_path):
    logs = tmp_path / "logs"
    process = _start(PREEMPTIBLE_RUN, tmp_path)
    deadline = time.monotonic() + 300
    while _logged_steps(logs) < 10 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be signalled:\n" + process.stdout.read()[-3000:]
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]

    assert process.returncode == PREEMPTED_EXIT, output[-3000:]
    (first_run,) = [path.parent for path in logs.glob("runs/*/*/.hydra")]
    checkpoint = first_run / "checkpoints" / "last.ckpt"
    saved = torch.load(checkpoint, weights_only=False)
    step = saved["global_step"]
    assert 1 <= step < MAX_STEPS
    assert "optimizer_states" in saved and "lr_schedulers" in saved  # full, resumable
    assert f"stopped by a termination signal at step {step}; saved a full checkpoint at step {step}: {checkpoint}" in output
    assert "Resume it (same overrides; output goes to a new run folder): distill " in output
    assert output.rstrip().endswith("ckpt_path=auto") and "Traceback" not in output
    assert not (first_run / "metrics.json").exists()
    assert not list(checkpoint.parent.glob(".*.tmp"))  # no staged file left behind

    time.sleep(1.1)  # a new run folder: Hydra names them by the second
    resumed = _run([*PREEMPTIBLE_RUN, "ckpt_path=auto"], tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert f"ckpt_path=auto: resuming from {checkpoint} (step {step})" in resumed.stdout
    assert f"Restoring states from the checkpoint path at {checkpoint}" in resumed.stdout
    (second_run,) = [path.parent for path in logs.glob("runs/*/*/metrics.json")]
    assert torch.load(second_run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == MAX_STEPS

    # The same command uninterrupted (its own log folder, so auto finds nothing and says so).
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    fresh = _run([*PREEMPTIBLE_RUN, "ckpt_path=auto"], fresh_dir)
    assert fresh.returncode == 0, fresh.stdout[-3000:]
    assert "ckpt_path=auto: no earlier run with these overrides has a full checkpoints/last.ckpt" in fresh.stdout
    (fresh_run,) = [path.parent for path in (fresh_dir / "logs").glob("runs/*/*/metrics.json")]
    expected, got = _final_student(fresh_run), _final_student(second_run)
    assert expected.keys() == got.keys()
    # Exact only when mid-epoch resume restores the sampler, collator and RNG state (issue 19 item 2,
    # another branch): until then the resumed epoch sees another data order and dropout masks.
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=0, msg=key)


def _run_folder(root: Path, name: str, overrides: list[str], checkpoint: dict | None, mtime: float) -> Path:
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {override}\n" for override in overrides))
    if checkpoint is not None:
        path = folder / "checkpoints" / "last.ckpt"
        path.parent.mkdir()
        torch.save(checkpoint, path)
        os.utime(path, (mtime, mtime))
    return folder


FULL = {"state_dict": {}, "optimizer_states": [], "lr_schedulers": [], "global_step": 7}
WEIGHTS_ONLY = {"state_dict": {}, "global_step": 9}


def test_auto_picks_the_newest_full_checkpoint_of_the_same_overrides(tmp_path):
    from distill.resume import find_auto_checkpoint

    overrides = ["experiment=quickstart", "seed=1", "ckpt_path=auto"]
    older = _run_folder(tmp_path, "a/1", ["seed=1", "experiment=quickstart"], FULL, 1000)  # order does not matter
    newer = _run_folder(tmp_path, "b/2", ["experiment=quickstart", "seed=1", "ckpt_path=auto"], FULL, 2000)
    _run_folder(tmp_path, "c/3", ["experiment=quickstart", "seed=2"], FULL, 3000)  # other overrides
    _run_folder(tmp_path, "d/4", ["experiment=quickstart", "seed=1"], WEIGHTS_ONLY, 4000)  # not resumable
    this = _run_folder(tmp_path, "e/5", overrides, None, 0)
    assert find_auto_checkpoint(tmp_path, overrides, this_run=this) == newer / "checkpoints" / "last.ckpt"
    os.utime(older / "checkpoints" / "last.ckpt", (5000, 5000))
    assert find_auto_checkpoint(tmp_path, overrides, this_run=this) == older / "checkpoints" / "last.ckpt"
    # A requeued job rerunning in its first attempt's folder, outside the searched root, finds its own.
    requeued = _run_folder(tmp_path / "elsewhere", "job", overrides, FULL, 6000)
    assert find_auto_checkpoint(tmp_path / "runs", overrides, this_run=requeued) == requeued / "checkpoints" / "last.ckpt"


def test_auto_with_no_earlier_run_starts_fresh_and_says_so(tmp_path, caplog):
    import logging

    from distill.resume import resolve_ckpt_path

    caplog.set_level(logging.INFO, logger="distill.resume")
    _run_folder(tmp_path, "a/1", ["seed=1"], WEIGHTS_ONLY, 1000)
    assert resolve_ckpt_path("auto", tmp_path, ["seed=1", "ckpt_path=auto"]) is None
    assert "skipping" in caplog.text and "weights only" in caplog.text
    assert f"no earlier run with these overrides has a full checkpoints/last.ckpt under {tmp_path}: starting fresh" in caplog.text
    assert resolve_ckpt_path("auto", tmp_path / "missing", ["seed=1"]) is None


def test_a_run_folder_means_its_last_checkpoint_and_a_file_stays_as_given(tmp_path):
    from distill.resume import resolve_ckpt_path

    folder = _run_folder(tmp_path, "a/1", ["seed=1"], FULL, 1000)
    assert resolve_ckpt_path(str(folder), tmp_path, []) == str(folder / "checkpoints" / "last.ckpt")
    assert resolve_ckpt_path("x/last.ckpt", tmp_path, []) == "x/last.ckpt"
    assert resolve_ckpt_path(None, tmp_path, []) is None


def test_the_resume_command_swaps_any_ckpt_path_for_auto():
    from distill.cli import resume_command

    assert resume_command(["experiment=quickstart", "ckpt_path=/x/last.ckpt", "seed=1"]) == (
        "distill experiment=quickstart seed=1 ckpt_path=auto"
    )
    assert resume_command(["-m", "loss.temperature=1,2", "+ckpt_path=auto"]) == "distill -m loss.temperature=1,2 ckpt_path=auto"


def test_atomic_checkpoint_io_keeps_the_old_file_when_a_save_fails(tmp_path):
    from distill.checkpoints import AtomicCheckpointIO

    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("the signal landed mid-write")

    with pytest.raises(RuntimeError):
        io.save_checkpoint({"global_step": 2, "bad": Unpicklable()}, path)
    assert torch.load(path, weights_only=False) == {"global_step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


@pytest.mark.parametrize(("hook", "stop"), [("on_train_batch_end", 10), ("on_train_epoch_end", 12)])
def test_a_signal_mid_epoch_or_while_an_epoch_ends_resumes_to_the_same_weights(hook, stop, data_dir, tmp_path, monkeypatch):
    """Lightning raises the stop in the epoch loop (mid-epoch) or, when the signal lands while an
    epoch ends, in the fit loop after the epoch counts as completed: both checkpoints must resume
    exactly (4 batches an epoch here, so step 12 ends epoch 2)."""
    from lightning.pytorch.callbacks import Callback
    from safetensors.torch import load_file

    import distill.train as train_module
    from distill.errors import Preempted

    class Signal(Callback):
        def _signal(self, trainer, *args):
            if trainer.global_step == stop:
                trainer._signal_connector.received_sigterm = True  # what Lightning's SIGTERM handler sets

    setattr(Signal, hook, Signal._signal)
    common = [*TINY_RUN, "callbacks=default", "callbacks.progress_bar=null", "trainer.max_steps=20",
              "trainer.max_epochs=-1", "trainer.check_val_every_n_epoch=100000"]
    train_module.train(compose(common, tmp_path / "whole"))
    make_trainer = train_module.make_trainer
    monkeypatch.setattr(train_module, "make_trainer", lambda cfg: _with(make_trainer(cfg), Signal()))
    with pytest.raises(Preempted):
        train_module.train(compose(common, tmp_path / "cut"))
    monkeypatch.setattr(train_module, "make_trainer", make_trainer)
    checkpoint = tmp_path / "cut" / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=False)["global_step"] == stop
    train_module.train(compose([*common, f"ckpt_path={checkpoint}"], tmp_path / "resumed"))
    whole = load_file(tmp_path / "whole" / "run" / "student" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "run" / "student" / "model.safetensors")
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], atol=1e-6, rtol=0, msg=key)


def _with(trainer, callback):
    trainer.callbacks.append(callback)
    return trainer

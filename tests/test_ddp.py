"""2-process DDP on CPU (gloo) gives the same student as one process on the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import TINY_RUN

#: Deterministic data order and no dropout, so the two runs see exactly the same examples.
SAME_WORK = [
    *TINY_RUN,
    "data.shuffle=false",
    "data.group_by_length=false",
    "data.train_limit=64",
    "trainer.max_steps=4",
    "trainer.val_check_interval=null",
    "trainer.limit_val_batches=0",
    "trainer.gradient_clip_val=null",
    "++student.config.hidden_dropout_prob=0.0",
    "++student.config.attention_probs_dropout_prob=0.0",
    "report.latency_repeats=0",
]


def run(tmp_path: Path, name: str, extra: list[str]) -> dict[str, torch.Tensor]:
    run_dir = tmp_path / name
    env = {**os.environ, "DISTILL_CACHE_DIR": str(tmp_path / "cache"), "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "-m", "distill", *SAME_WORK, *extra, f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return load_file(run_dir / "student" / "model.safetensors")


def test_two_process_ddp_matches_one_process_on_the_same_global_batch(data_dir, tmp_path):
    single = run(tmp_path, "single", ["data.batch_size=8", "trainer.devices=1"])
    ddp = run(tmp_path, "ddp", ["data.batch_size=4", "trainer.devices=2", "trainer.strategy=ddp"])
    initial = run(tmp_path, "initial", ["data.batch_size=8", "trainer.max_steps=0"])
    moved = 0
    for name, expected in single.items():
        assert torch.allclose(ddp[name], expected, atol=2e-5, rtol=1e-4), name
        moved += int(not torch.allclose(expected, initial[name]))
    assert moved > len(single) // 2  # the runs trained: most tensors changed from their init

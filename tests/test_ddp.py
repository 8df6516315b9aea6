"""2-process DDP on CPU (gloo) gives the same student as one process on the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import TINY_RUN

#: No dropout, a fixed data order, and loss terms that are per-example means (KL·T² + CE), so the
#: mean of the per-rank gradients equals the gradient of the global batch. Plain SGD with a large
#: step turns any gradient difference into a visible weight difference (Adam's normalised steps
#: would hide it).
SAME_WORK = [
    *TINY_RUN,
    "loss=kd_ce",
    "optimizer._target_=torch.optim.SGD",
    "optimizer.lr=1.0",
    "optimizer.fused=null",
    "scheduler=null",
    "data=generic",
    "data.text_column=sentence",
    "data.shuffle=false",
    "data.group_by_length=false",
    "data.train_limit=null",
    "trainer.max_steps=4",
    "trainer.val_check_interval=null",
    "trainer.limit_val_batches=0",
    "trainer.gradient_clip_val=null",
    "++student.config.hidden_dropout_prob=0.0",
    "++student.config.attention_probs_dropout_prob=0.0",
    "report.latency_repeats=0",
]
EXAMPLES = 64


def run(tmp_path: Path, name: str, train_file: Path, extra: list[str]) -> dict[str, torch.Tensor]:
    run_dir = tmp_path / name
    env = {**os.environ, "DISTILL_CACHE_DIR": str(tmp_path / "cache"), "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "-m", "distill", *SAME_WORK, f"data.train_file={train_file}",
         f"data.eval_file={train_file}", *extra, f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return load_file(run_dir / "student" / "model.safetensors")


def test_two_process_ddp_matches_one_process_on_the_same_global_batch(data_dir, tmp_path):
    header, *rows = (data_dir / "sst2" / "train.tsv").read_text().splitlines()[: EXAMPLES + 1]
    in_file_order = tmp_path / "train.tsv"
    in_file_order.write_text("\n".join([header, *rows]) + "\n")
    # Under DDP, Lightning always shards training data with DistributedSampler(shuffle=True,
    # seed=PL_GLOBAL_SEED): rank r takes permutation[r::2], so step k covers permutation[8k:8k+8].
    # The single process reads the same rows in that permuted order, in batches of 8.
    permutation = torch.randperm(EXAMPLES, generator=torch.Generator().manual_seed(0)).tolist()
    in_ddp_order = tmp_path / "train_ddp_order.tsv"
    in_ddp_order.write_text("\n".join([header, *(rows[i] for i in permutation)]) + "\n")

    single = run(tmp_path, "single", in_ddp_order, ["data.batch_size=8", "trainer.devices=1"])
    ddp = run(tmp_path, "ddp", in_file_order, ["data.batch_size=4", "trainer.devices=2", "trainer.strategy=ddp"])
    for name, expected in single.items():
        assert torch.allclose(ddp[name], expected, atol=1e-5), name
    # The check can fail: the same work in another order ends somewhere else.
    other_order = run(tmp_path, "other", in_file_order, ["data.batch_size=8", "trainer.devices=1"])
    gap = (other_order["classifier.weight"] - single["classifier.weight"]).abs().max().item()
    assert gap > 1e-3

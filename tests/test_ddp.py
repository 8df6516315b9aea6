"""2-process DDP on CPU (gloo): the same student as one process on the same global batch, and
training batches that keep their length grouping and transfer mix on every rank."""

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
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


def run(
    tmp_path: Path, name: str, train_file: Path, extra: list[str], work: list[str] = SAME_WORK
) -> dict[str, torch.Tensor]:
    run_dir = tmp_path / name
    tests_dir = str(Path(__file__).parent)  # BatchRecorder below, importable in every rank
    path = os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "DISTILL_CACHE_DIR": str(tmp_path / "cache"), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": path}
    result = subprocess.run(
        [sys.executable, "-m", "distill", *work, f"data.train_file={train_file}",
         f"data.eval_file={train_file}", *extra, f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    quantized = run_dir / "student" / "quantized.safetensors"  # a compress callback converted it
    return load_file(quantized if quantized.exists() else run_dir / "student" / "model.safetensors")


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_on_the_same_global_batch(data_dir, tmp_path):
    header, *rows = (data_dir / "sst2" / "train.tsv").read_text().splitlines()[: EXAMPLES + 1]
    in_file_order = tmp_path / "train.tsv"
    in_file_order.write_text("\n".join([header, *rows]) + "\n")
    # The training order shards itself in whole batches (distill/data/sampling.py): step k's global
    # batch is batch k of one process at batch_size x world_size. In file order (data.shuffle=false)
    # rank r's step-k batch is rows [8k + 4r, 8k + 4r + 4), so step k covers rows [8k, 8k + 8).
    single = run(tmp_path, "single", in_file_order, ["data.batch_size=8", "trainer.devices=1"])
    ddp = run(tmp_path, "ddp", in_file_order, ["data.batch_size=4", "trainer.devices=2", "trainer.strategy=ddp"])
    for name, expected in single.items():
        assert torch.allclose(ddp[name], expected, atol=1e-5), name
    # The check can fail: the same work in another order ends somewhere else.
    permutation = torch.randperm(EXAMPLES, generator=torch.Generator().manual_seed(0)).tolist()
    other_order = tmp_path / "train_other_order.tsv"
    other_order.write_text("\n".join([header, *(rows[i] for i in permutation)]) + "\n")
    other = run(tmp_path, "other", other_order, ["data.batch_size=8", "trainer.devices=1"])
    gap = (other["classifier.weight"] - single["classifier.weight"]).abs().max().item()
    assert gap > 1e-3


class BatchRecorder(L.Callback):
    """Writes what one rank trained on to ``<folder>/rank<r>.json``: its sampler (type, world, the
    indices of each epoch), each batch's real token counts and labels, and the datamodule's lengths."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.record = {"epochs": [], "batches": []}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        sampler = trainer.train_dataloader.sampler  # after Lightning's processing: what the loop uses
        self.record["sampler"] = type(sampler).__name__
        self.record["world"] = [sampler.num_replicas, sampler.rank]
        self.record["epochs"].append({"epoch": sampler.epoch, "indices": list(sampler)})

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.record["batches"].append(
            {"epoch": trainer.current_epoch, "lengths": batch["attention_mask"].sum(dim=1).tolist(),
             "labels": batch["labels"].tolist()}
        )

    def on_train_end(self, trainer, pl_module) -> None:
        data = trainer.datamodule
        self.record["train_lengths"], self.record["transfer_lengths"] = data.train_lengths, data.transfer_lengths
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.record))


#: Enough rows that length grouping has several global batches per mega-batch to sort.
LABELED, TRANSFER, PER_RANK_LABELED, PER_RANK_TRANSFER = 64, 512, 4, 8


@pytest.mark.slow
def test_ddp_ranks_train_on_length_grouped_batches_with_the_configured_mix(data_dir, tmp_path):
    from distill.data.sampling import TransferMixSampler

    header, *rows = (data_dir / "sst2" / "train.tsv").read_text().splitlines()[: LABELED + TRANSFER + 1]
    train_file = tmp_path / "train.tsv"
    train_file.write_text("\n".join([header, *rows]) + "\n")
    records = tmp_path / "records"
    run(tmp_path, "mix", train_file, [
        "data.shuffle=true", "data.group_by_length=true", f"data.train_limit={LABELED}",
        "data.transfer.source=train_rest", f"data.transfer.ratio={PER_RANK_TRANSFER / PER_RANK_LABELED}",
        f"data.batch_size={PER_RANK_LABELED}", "trainer.max_steps=-1", "trainer.max_epochs=2",
        "trainer.devices=2", "trainer.strategy=ddp",
        "+callbacks.recorder._target_=test_ddp.BatchRecorder", f"+callbacks.recorder.folder={records}",
    ], work=[item for item in SAME_WORK if not item.startswith(("data.shuffle", "data.group_by_length",
                                                               "data.train_limit", "trainer.max_steps"))])
    ranks = [json.loads((records / f"rank{rank}.json").read_text()) for rank in range(2)]
    lengths = ranks[0]["train_lengths"] + ranks[0]["transfer_lengths"]
    assert len(ranks[0]["train_lengths"]) == LABELED and len(ranks[0]["transfer_lengths"]) == TRANSFER
    per_batch = PER_RANK_LABELED + PER_RANK_TRANSFER
    steps_per_epoch = TRANSFER // (2 * PER_RANK_TRANSFER)  # the larger pool once per epoch: 32
    for rank, record in enumerate(ranks):
        # Lightning left the sampler alone, and it read the process group: rank r of 2.
        assert record["sampler"] == "TransferMixSampler" and record["world"] == [2, rank]
        assert [epoch["epoch"] for epoch in record["epochs"]] == [0, 1]  # set_epoch each epoch
        assert record["epochs"][0]["indices"] != record["epochs"][1]["indices"]  # a new order
        assert len(record["batches"]) == 2 * steps_per_epoch  # the same count on both ranks
        for batch in record["batches"]:  # the configured mix: 4 labeled rows, then 8 transfer rows
            labeled = [label != -100 for label in batch["labels"]]
            assert labeled == [True] * PER_RANK_LABELED + [False] * PER_RANK_TRANSFER
        # The batches are the sampler's indices, in order, and length-grouped: each pool's rows
        # in a batch come from a run sorted longest first.
        for epoch in (0, 1):
            indices = record["epochs"][epoch]["indices"]
            batches = [b for b in record["batches"] if b["epoch"] == epoch]
            assert [n for b in batches for n in b["lengths"]] == [lengths[i] for i in indices]
            for b in batches:
                for part in (b["lengths"][:PER_RANK_LABELED], b["lengths"][PER_RANK_LABELED:]):
                    assert part == sorted(part, reverse=True)
    # The global batches are as documented: step k on the two ranks is batch k of one process with
    # twice the per-batch counts, rank 0 taking the first slice of each pool, rank 1 the second.
    for epoch in (0, 1):
        one_process = TransferMixSampler(
            ranks[0]["train_lengths"], ranks[0]["transfer_lengths"], 2 * PER_RANK_LABELED,
            2 * PER_RANK_TRANSFER, seed=0, num_replicas=1, rank=0,
        )
        one_process.set_epoch(epoch)
        expected = list(one_process)
        for k in range(steps_per_epoch):
            global_batch = expected[2 * per_batch * k : 2 * per_batch * (k + 1)]
            labeled, transfer = global_batch[: 2 * PER_RANK_LABELED], global_batch[2 * PER_RANK_LABELED :]
            for rank, record in enumerate(ranks):
                got = record["epochs"][epoch]["indices"][per_batch * k : per_batch * (k + 1)]
                assert got == (labeled[PER_RANK_LABELED * rank : PER_RANK_LABELED * (rank + 1)]
                               + transfer[PER_RANK_TRANSFER * rank : PER_RANK_TRANSFER * (rank + 1)])
    # Length grouping pays: fewer token slots than the same batches in random order would use.
    padded = sum(len(b["lengths"]) * max(b["lengths"]) for record in ranks for b in record["batches"])
    random_padded = 0
    for rank in range(2):
        shuffled = TransferMixSampler(ranks[0]["train_lengths"], ranks[0]["transfer_lengths"], PER_RANK_LABELED,
                                      PER_RANK_TRANSFER, group_by_length=False, num_replicas=2, rank=rank)
        for epoch in (0, 1):
            shuffled.set_epoch(epoch)
            order = list(shuffled)
            for start in range(0, len(order), per_batch):
                batch = [lengths[i] for i in order[start : start + per_batch]]
                random_padded += len(batch) * max(batch)
    print(f"2 ranks, 2 epochs: {padded} token slots length-grouped, {random_padded} in random order")
    assert padded < 0.8 * random_padded, (padded, random_padded)


@pytest.mark.slow
def test_two_process_ddp_with_qat_gives_the_same_quantized_student_as_one_process(data_dir, tmp_path):
    """Fake-quant int8 weights and per-token int8 activations are per weight row and per example, so
    the ranks' mean gradient is the global batch's, up to float rounding: a batch of 4 and one of 8
    round differently in the last bit, and fake-quant turns a value on a rounding boundary into a
    whole step. So: weights within 1e-4 (plain KD above: 1e-5; another data order: > 1e-3), and the
    int8 codes of the converted students equal but for a few boundary codes, one step apart."""
    header, *rows = (data_dir / "sst2" / "train.tsv").read_text().splitlines()[: EXAMPLES + 1]
    train_file = tmp_path / "train.tsv"
    train_file.write_text("\n".join([header, *rows]) + "\n")
    qat = ["compress=qat_int8"]
    single = run(tmp_path, "single", train_file, [*qat, "data.batch_size=8", "trainer.devices=1"])
    ddp = run(tmp_path, "ddp", train_file, [*qat, "data.batch_size=4", "trainer.devices=2", "trainer.strategy=ddp"])
    assert single.keys() == ddp.keys()
    codes = [name for name in single if name.endswith(".qdata")]
    assert len(codes) == 10  # the 6 Linear layers of the one encoder layer, the pooler, 3 embedding tables
    for name, expected in single.items():
        if name in codes:  # int8 codes, one unsigned byte each
            step = (ddp[name].int() - expected.int()).abs()
            assert step.max() <= 1 and (step > 0).float().mean() < 0.01, name
        else:
            torch.testing.assert_close(ddp[name], expected, atol=1e-4, rtol=0, msg=name)


class MaskRecorder(L.Callback):
    """Writes what one rank's student looks like at the end of training to ``<folder>/rank<r>.pt``:
    the pruning callback's masks and the student's weights (which of them are zero)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_end(self, trainer, pl_module) -> None:
        (pruning,) = [c for c in trainer.callbacks if type(c).__name__ == "Pruning"]
        self.folder.mkdir(parents=True, exist_ok=True)
        weights = {name: p.detach().clone() for name, p in pl_module.student.named_parameters()}
        torch.save({"masks": pruning.masks.state_dict(), "weights": weights}, self.folder / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_two_process_ddp_keeps_identical_wanda_masks_on_both_ranks(data_dir, tmp_path):
    """Wanda's scores read calibration batches: rank 0 computes the masks and broadcasts them, so
    both ranks prune the same weights, and the same as one process on the same global batch."""
    header, *rows = (data_dir / "sst2" / "train.tsv").read_text().splitlines()[: EXAMPLES + 1]
    train_file = tmp_path / "train.tsv"
    train_file.write_text("\n".join([header, *rows]) + "\n")
    prune = ["compress=prune_wanda", "compress.prune.sparsity=0.6", "compress.prune.start_step=1",
             "compress.prune.end_step=3", "compress.prune.every=1", "+callbacks.masks._target_=test_ddp.MaskRecorder"]
    # Calibration reads the first training batches of the per-rank size: 2 × 8 alone, 4 × 4 under DDP,
    # the same 16 sentences.
    single = tmp_path / "single_masks"
    run(tmp_path, "single", train_file, [*prune, f"+callbacks.masks.folder={single}", "data.batch_size=8",
                                         "compress.prune.calibration_batches=2", "trainer.devices=1"])
    ddp = tmp_path / "ddp_masks"
    run(tmp_path, "ddp", train_file, [*prune, f"+callbacks.masks.folder={ddp}", "data.batch_size=4",
                                      "compress.prune.calibration_batches=4", "trainer.devices=2", "trainer.strategy=ddp"])
    ranks = [torch.load(ddp / f"rank{rank}.pt") for rank in (0, 1)]
    alone = torch.load(single / "rank0.pt")
    assert len(ranks[0]["masks"]) == 7 and ranks[0]["masks"].keys() == alone["masks"].keys()
    for name, mask in ranks[0]["masks"].items():
        assert torch.equal(mask, ranks[1]["masks"][name]), name
        # One process: the same sentences and weights up to float rounding (a score on the threshold may flip).
        assert float((mask == alone["masks"][name]).float().mean()) > 0.995, name
        assert float((~mask).float().mean()) == pytest.approx(0.6, abs=0.01)
        for rank in ranks:
            assert (rank["weights"][name][~mask] == 0).all(), name
    for name, weight in ranks[0]["weights"].items():
        torch.testing.assert_close(ranks[1]["weights"][name], weight, atol=1e-6, rtol=0, msg=name)

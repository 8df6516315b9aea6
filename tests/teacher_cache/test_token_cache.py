"""A causal-LM teacher cache (``task=causal_lm``): each scored position's top-k logits, token ids and
tail log-sum-exp are the online teacher's; the loss read from it equals the online loss when
k = V; training reads it instead of running the teacher; what it cannot serve is refused."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import compose
from distill.errors import ConfigError
from distill.losses.base import next_token_positions
from distill.losses.topk import tail_logsumexp
from distill.teacher_cache.build import length_batches
from distill.train import build_run, cache_teacher, train
from test_causal_lm import TOKEN_KD

SMALL = [*TOKEN_KD, "student.config.num_hidden_layers=1", "data.train_limit=6", "teacher_cache.enabled=true", "teacher_cache.batch_size=4"]


def _online_rows(module, datamodule, batch):
    """The online teacher's logits at the batch's scored positions, ``(N, V)``, in row order."""
    inputs = {key: value for key, value in batch.items() if key not in ("labels", "example_index")}
    with torch.no_grad():
        logits = module.teacher.eval()(**inputs).logits[:, :-1, : module.vocab_size]
    return logits[next_token_positions(batch["labels"])]


def test_fp32_cache_holds_each_scored_positions_top_k_and_tail_of_the_teacher(data_dir, tmp_path):
    cfg = compose([*SMALL, "teacher_cache.dtype=float32", "teacher_cache.top_k=5",
                   "teacher_cache.temperatures=[1,2]", "teacher_cache.batch_size=3"], tmp_path)
    module, datamodule, _, _ = build_run(cfg)
    cache = module.teacher_cache
    assert cache.splits == ("train",) and cache.token_level("train")  # validation runs the teacher
    dataset, lengths = datamodule.teacher_cache_splits()["train"]
    assert cache.num_examples("train") == len(dataset) == 6
    collate = datamodule.collator()
    for rows in length_batches(lengths, 3):  # the cache pass's own batches: bit for bit
        batch = collate([dataset[i] for i in rows])
        online = _online_rows(module, datamodule, batch)
        for temperature in (1.0, 2.0):
            stored, counts = cache.token_top_k("train", batch["example_index"], temperature)
            assert counts.tolist() == next_token_positions(batch["labels"]).sum(1).tolist() == [23] * len(rows)
            values, indices = online.topk(5, dim=-1)
            assert torch.equal(stored.values, values) and torch.equal(stored.indices, indices)
            assert torch.equal(stored.tail_logsumexp, tail_logsumexp(online, indices, temperature))
    with pytest.raises(ValueError, match=r"stored for temperatures \[1.0, 2.0\], not for loss.temperature=4"):
        cache.token_top_k("train", torch.tensor([0]), 4.0)
    manifest = json.loads((cache.folder / "manifest.json").read_text())
    assert manifest["splits"]["train"]["kind"] == "token_top_k" and manifest["splits"]["train"]["rows"] == 6 * 23
    assert manifest["splits"]["train"]["indices_dtype"] == "uint16"  # 30,522 token ids fit in 16 bits


def test_with_k_equal_to_the_vocabulary_the_cached_loss_is_the_online_loss(data_dir, tmp_path):
    cfg = compose([*SMALL, "data.train_limit=2", "teacher_cache.dtype=float32", "teacher_cache.top_k=30522",
                   "loss.temperature=2.0"], tmp_path)
    module, datamodule, _, _ = build_run(cfg)
    module.eval()
    batch = next(iter(datamodule.train_dataloader()))
    with torch.no_grad():
        cached = module.loss(module._loss_inputs(batch, with_teacher=True)).unweighted["kd"]
        cache, module.teacher_cache = module.teacher_cache, None
        online = module.loss(module._loss_inputs(batch, with_teacher=True)).unweighted["kd"]
        module.teacher_cache = cache
    torch.testing.assert_close(cached, online, rtol=1e-4, atol=1e-7)  # float32 sums in other orders


def test_fp16_top_k_is_within_half_precision_and_its_loss_below_the_full_kl(data_dir, tmp_path):
    module, datamodule, _, _ = build_run(compose([*SMALL, "teacher_cache.top_k=16"], tmp_path))
    module.eval()
    batch = next(iter(datamodule.train_dataloader()))
    stored, _ = module.teacher_cache.token_top_k("train", batch["example_index"], 1.0)
    values, _ = _online_rows(module, datamodule, batch).topk(16, dim=-1)
    torch.testing.assert_close(stored.values, values, rtol=2**-10, atol=1e-6)
    with torch.no_grad():
        cached = module.loss(module._loss_inputs(batch, with_teacher=True)).unweighted["kd"]
        module.teacher_cache = None
        online = module.loss(module._loss_inputs(batch, with_teacher=True)).unweighted["kd"]
    assert 0 < cached <= online + 1e-6  # the coarsened KL never exceeds the full one


def test_training_reads_the_cache_and_only_validation_runs_the_teacher(data_dir, tmp_path):
    module, datamodule, trainer, _ = build_run(compose(SMALL, tmp_path))
    stages = []
    module.teacher.register_forward_hook(lambda *args: stages.append(trainer.state.stage.value))
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 2 and stages == []
    trainer.validate(module, datamodule=datamodule, verbose=False)  # the eval text is not cached
    assert stages and set(stages) == {"validate"}


def test_a_temperature_sweep_shares_one_cache_and_a_run_reads_it_by_path(data_dir, tmp_path):
    sweep = [*SMALL, "teacher_cache.temperatures=[1,2]"]
    built = cache_teacher(compose([*sweep, "stage=cache_teacher"], tmp_path))
    first = train(compose([*sweep, "loss.temperature=1"], tmp_path / "a"))
    second = train(compose([*sweep, "loss.temperature=2"], tmp_path / "b"))
    assert first["teacher_cache"]["key"] == second["teacher_cache"]["key"] == built["key"]
    by_path = train(compose([*TOKEN_KD, "data.train_limit=6", f"teacher_cache.path={built['path']}",
                             "teacher_cache.temperatures=[1,2]"], tmp_path / "c"))
    assert by_path["teacher_cache"]["path"] == built["path"]
    # Other storage settings (here the top-k) are refused by path, naming the difference.
    with pytest.raises(ConfigError, match=r"other storage: teacher_cache.top_k=64 in the cache, 8 in this run"):
        build_run(compose([*TOKEN_KD, "data.train_limit=6", f"teacher_cache.path={built['path']}",
                           "teacher_cache.temperatures=[1,2]", "teacher_cache.top_k=8"], tmp_path / "d"))


@pytest.mark.parametrize("overrides, message", [
    (["loss=token_reverse_kd"], r"loss terms \['kd'\] need the teacher's whole distribution"),
    (["teacher_cache.temperatures=[1,2]", "loss.temperature=4"], r"loss.temperature=4: not among teacher_cache.temperatures=\[1.0, 2.0\]"),
    (["teacher_cache.top_k=0"], r"teacher_cache.top_k=0: use an integer >= 1"),
    (["teacher_cache.temperatures=[0]"], r"teacher_cache.temperatures=.*a list of temperatures > 0"),
])
def test_what_a_token_cache_cannot_serve_is_refused_before_any_work(data_dir, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_run(compose([*SMALL, *overrides], tmp_path))
    assert not (tmp_path / "cache" / "teacher_outputs").exists()


def test_batches_whose_labels_differ_from_the_cached_ones_are_refused(data_dir, tmp_path):
    module, datamodule, _, _ = build_run(compose(SMALL, tmp_path))
    batch = next(iter(datamodule.train_dataloader()))
    batch["labels"][0, :5] = -100  # as if a 5-token prompt were masked now: 4 fewer scored positions
    with pytest.raises(ValueError, match=r"score \[19, .*the cache stored \[23, .*labels differ"):
        module._loss_inputs(batch, with_teacher=True)

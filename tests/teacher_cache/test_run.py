"""A run with ``teacher_cache``: the cached logits are the teacher's, training never runs the teacher,
and a cache that does not fit the run (teacher, data, tokenisation, what the loss reads) is refused."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_RUN, compose
from distill.errors import ConfigError
from distill.teacher_cache.build import length_batches
from distill.train import build_run, cache_teacher, train

TINY_SST2 = [*TINY_RUN, "data=sst2", "loss=kd_ce"]


def _inputs(batch):
    return {key: value for key, value in batch.items() if key not in ("labels", "label_mask", "example_index")}


def test_fp32_cache_holds_exactly_the_teachers_logits_of_each_example(data_dir, tmp_path):
    cfg = compose([*TINY_SST2, "teacher_cache.enabled=true", "teacher_cache.dtype=float32", "teacher_cache.batch_size=8"], tmp_path)
    module, datamodule, _, _ = build_run(cfg)
    teacher, cache = module.teacher.eval(), module.teacher_cache
    for split, (dataset, lengths) in datamodule.teacher_cache_splits().items():
        assert cache.num_examples(split) == len(dataset)
        # In the cache pass's own batches the values are bit for bit the teacher's ...
        for rows in length_batches(lengths, 8):
            batch = datamodule.collator()([dataset[i] for i in rows])
            with torch.no_grad():
                online = teacher(**_inputs(batch)).logits
            assert torch.equal(cache.logits(split, batch["example_index"]), online)
    # ... and in the training batches (other padding, other batch) equal to float32 summation order.
    for batch in datamodule.train_dataloader():
        with torch.no_grad():
            online = teacher(**_inputs(batch)).logits
        torch.testing.assert_close(cache.logits("train", batch["example_index"]), online, rtol=0, atol=1e-5)


def test_fp16_cache_is_within_half_precision_and_the_kd_loss_follows(data_dir, tmp_path):
    cfg = compose([*TINY_SST2, "teacher_cache.enabled=true"], tmp_path)
    module, datamodule, _, _ = build_run(cfg)
    batch = next(iter(datamodule.train_dataloader()))
    module.eval()  # no dropout: both passes see the same student outputs
    with torch.no_grad():
        cached = module._loss_inputs(batch, with_teacher=True)
        cache, module.teacher_cache = module.teacher_cache, None
        online = module._loss_inputs(batch, with_teacher=True)
        module.teacher_cache = cache
    torch.testing.assert_close(cached.teacher.logits, online.teacher.logits, rtol=2**-10, atol=1e-5)
    torch.testing.assert_close(module.loss(cached).unweighted["kd"], module.loss(online).unweighted["kd"], rtol=1e-3, atol=1e-6)


def test_training_with_the_cache_never_runs_the_teacher(data_dir, tmp_path):
    cfg = compose([*TINY_SST2, "teacher_cache.enabled=true"], tmp_path)
    module, datamodule, trainer, _ = build_run(cfg)
    calls = []
    module.teacher.register_forward_hook(lambda *args: calls.append(1))
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 4 and calls == []


def test_stage_cache_teacher_builds_once_and_runs_read_it_by_path_or_key(data_dir, tmp_path):
    summary = cache_teacher(compose([*TINY_SST2, "stage=cache_teacher"], tmp_path))
    assert summary["examples"] == {"train": 32, "eval": 16}
    built = json.loads((tmp_path / "cache" / "teacher_outputs" / summary["key"] / "manifest.json").read_text())
    by_path = train(compose([*TINY_SST2, f"teacher_cache.path={summary['path']}"], tmp_path / "a"))
    assert by_path["teacher_cache"]["path"] == summary["path"]
    # Another run (another output folder, same teacher and data) finds it by key without building.
    by_key = train(compose([*TINY_SST2, "teacher_cache.enabled=true", f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path / "b"))
    assert by_key["teacher_cache"]["path"] == summary["path"]
    assert json.loads((tmp_path / "cache" / "teacher_outputs" / summary["key"] / "manifest.json").read_text()) == built


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (["seed=1"], "other teacher"),  # a config-built teacher: another seed, other weights
        (["data.max_length=8"], "data.max_length: 66 in the cache, 8 here"),
        (["data.train_limit=24"], "32 examples in the cache, 24 in this run"),
        (["teacher_cache.dtype=float32"], "teacher_cache.dtype='float16' in the cache, 'float32' in this run"),
    ],
)
def test_a_cache_of_another_teacher_data_or_setting_is_refused(data_dir, tmp_path, overrides, reason):
    summary = cache_teacher(compose([*TINY_SST2, "stage=cache_teacher"], tmp_path))
    cfg = compose([*TINY_SST2, f"teacher_cache.path={summary['path']}", *overrides], tmp_path / "other")
    with pytest.raises(ConfigError, match="does not fit this run") as error:
        build_run(cfg)
    assert reason in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss=kd_ce_cos"], "teacher_cache.enabled=true: loss term 'cos' (CosineHidden) reads the teacher's hidden states of layers [2] (0 = "
                             "embeddings, 2 = last); layers [2] are not cached (teacher_cache.hidden_layers=null). "
                             "Fix: teacher_cache.hidden_layers=[2]"),
        (["loss=minilm"], "loss terms ['relations'] read the teacher's attention or modules, which the cache does not store"),
        (["teacher=none", "loss=ce"], "there is no teacher to cache"),
        (["experiment=multi_teacher", *TINY_RUN[2:]], "with several teachers"),
        (["teacher_cache.dtype=int8"], "teacher_cache.dtype='int8': allowed ['float16', 'float32']"),
        (["stage=cache"], "stage='cache': allowed ['train', 'cache_teacher', 'generate']"),
        (["+teacher_cache.topk=4"], "teacher_cache.topk: unknown key; did you mean 'top_k'?"),
    ],
)
def test_settings_the_cache_cannot_serve_are_refused_before_any_work(data_dir, tmp_path, overrides, message):
    cfg = compose([*TINY_SST2, "teacher_cache.enabled=true", *overrides], tmp_path)
    with pytest.raises(ConfigError) as error:
        build_run(cfg)
    assert message in str(error.value)
    assert not (tmp_path / "cache" / "teacher_outputs").exists()


@pytest.mark.parametrize(
    ("task", "loss", "reason"),
    [("masked_lm", "kd", "masks tokens at random in every epoch"), ("feature_extraction", "pretrain_hidden", "has no logits")],
)
def test_token_and_base_model_tasks_are_refused(tmp_path, task, loss, reason):
    cfg = compose([*TINY_RUN, "data=wikitext_sst2_text", f"task={task}", f"loss={loss}", "module.metrics=[]",
                   "teacher_cache.enabled=true"], tmp_path)
    with pytest.raises(ConfigError, match=reason):
        build_run(cfg)


def test_a_missing_cache_path_says_how_to_build_it(data_dir, tmp_path):
    cfg = compose([*TINY_SST2, f"teacher_cache.path={tmp_path / 'nowhere'}"], tmp_path)
    with pytest.raises(ConfigError, match="no complete teacher cache there.*`stage=cache_teacher teacher_cache.path="):
        build_run(cfg)

"""Hidden states in the teacher cache (``teacher_cache.hidden_layers``): the stored rows are the
online teacher's hidden states of each non-padding token, a run reading them trains as the online
teacher does, and whatever they cannot serve (a layer not cached, a batch with other tokens) is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import TINY_RUN, compose
from distill.errors import ConfigError
from distill.teacher_cache import CacheIdentity, IncompleteCache, TeacherOutputCache, build_atomically
from distill.teacher_cache.build import length_batches
from distill.teacher_cache.hidden_states import hidden_file, place_hidden_states
from distill.teacher_cache.run import cache_identity
from distill.teacher_cache.store import CacheWriter
from distill.train import build_run, cache_teacher
from test_causal_lm import TOKEN_KD

TINY_COS = [*TINY_RUN, "data=sst2", "loss=kd_ce_cos"]  # the 2-layer tiny teacher: hidden_states 0..2


def _inputs(batch):
    return {key: value for key, value in batch.items() if key not in ("labels", "label_mask", "example_index")}


# -- the store ------------------------------------------------------------------------------------
MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])  # examples 2, 0, 1 of a batch: 3, 1, 4 tokens
TOKENS = [1, 4, 3]  # by example_index


def _states(seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(3, 4, 5, generator=generator) for _ in range(3))  # 2 layers: hidden_states 0..2


def _fill(dtype: str, states: tuple[torch.Tensor, ...]):
    identity = CacheIdentity("t" * 64, {"train": {"examples": 3, "tokens_sha256": "d" * 64}},
                             {"dtype": dtype, "logits": "full", "hidden_layers": [0, 2]})

    def build(folder: Path) -> None:
        writer = CacheWriter(folder, identity, dtype)
        writer.split("train", 3, 2)[:] = 0.0
        writer.hidden_split("train", TOKENS, [0, 2], 5, 2).write(np.array([2, 0, 1]), MASK, states)
        writer.finish()

    return build


def test_stored_rows_are_each_examples_real_tokens_and_are_laid_out_again_at_them(tmp_path):
    states = _states()
    cache, _ = build_atomically(tmp_path / "c", _fill("float32", states))
    assert cache.hidden_layers("train") == (0, 2)
    example_index = torch.tensor([1, 2])  # another batch: examples 1 and 2, padded to 4 tokens
    rows, counts, depth = cache.hidden_states("train", example_index)
    assert counts.tolist() == [4, 3] and depth == 2 and sorted(rows) == [0, 2]
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    placed = place_hidden_states(rows, counts, mask, depth, example_index)
    assert len(placed) == 3 and placed[1] is None
    for layer in (0, 2):
        assert torch.equal(placed[layer][0], states[layer][2])  # example 1: batch row 2 of the pass, 4 tokens
        assert torch.equal(placed[layer][1, :3], states[layer][0, :3])  # example 2: its 3 real tokens
        assert torch.equal(placed[layer][1, 3], torch.zeros(5))  # padding: zeros
    manifest = json.loads((cache.folder / "manifest.json").read_text())
    assert manifest["splits"]["train"]["hidden"] == {"layers": [0, 2], "examples": 3, "rows": 8, "width": 5,
                                                     "num_hidden_layers": 2}


def test_float16_hidden_states_are_within_half_precision_in_half_the_bytes(tmp_path):
    states = _states()
    half, _ = build_atomically(tmp_path / "c16", _fill("float16", states))
    build_atomically(tmp_path / "c32", _fill("float32", states))
    rows, _, _ = half.hidden_states("train", torch.tensor([0, 1, 2]))
    expected = torch.cat([states[2][1, :1], states[2][2], states[2][0, :3]])
    torch.testing.assert_close(rows[2], expected, rtol=2**-11, atol=2**-24)
    sizes = [hidden_file(tmp_path / name, "train", 2).stat().st_size for name in ("c32", "c16")]
    assert sizes[0] - sizes[1] == 8 * 5 * 2  # 8 tokens x width 5 x 2 bytes saved (same header)


def test_a_truncated_hidden_array_is_not_a_complete_cache(tmp_path):
    build_atomically(tmp_path / "c", _fill("float32", _states()))
    path = hidden_file(tmp_path / "c", "train", 2)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(IncompleteCache, match="hidden_2"):
        TeacherOutputCache(tmp_path / "c")


def test_a_batch_whose_token_counts_differ_from_the_stored_rows_is_refused_naming_the_examples(tmp_path):
    cache, _ = build_atomically(tmp_path / "c", _fill("float32", _states()))
    example_index = torch.tensor([0, 1])
    rows, counts, depth = cache.hidden_states("train", example_index)
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]])  # example 1 has 4 tokens stored, 3 here
    with pytest.raises(ValueError, match=r"examples \[1\] have \[3\] non-padding tokens in this batch, the cache "
                                         r"stored \[4\] rows"):
        place_hidden_states(rows, counts, mask, depth, example_index)


# -- runs on real SST-2 rows with the tiny models ---------------------------------------------------
def test_fp32_cached_hidden_states_are_the_online_teachers(data_dir, tmp_path):
    cfg = compose([*TINY_COS, "teacher_cache.enabled=true", "teacher_cache.dtype=float32",
                   "teacher_cache.batch_size=8", "teacher_cache.hidden_layers=[0,-1]"], tmp_path)
    module, datamodule, _, _ = build_run(cfg)
    teacher, cache = module.teacher.eval(), module.teacher_cache
    assert cache.identity.stored["hidden_layers"] == [0, 2]
    for split, (dataset, lengths) in datamodule.teacher_cache_splits().items():
        assert cache.hidden_layers(split) == (0, 2)
        # In the cache pass's own batches the stored rows are bit for bit the teacher's real tokens ...
        for rows in length_batches(lengths, 8):
            batch = datamodule.collator()([dataset[i] for i in rows])
            with torch.no_grad():
                online = teacher(**_inputs(batch), output_hidden_states=True).hidden_states
            stored, counts, _ = cache.hidden_states(split, batch["example_index"])
            mask = batch["attention_mask"].bool()
            assert counts.tolist() == mask.sum(1).tolist()
            for layer in (0, 2):
                assert torch.equal(stored[layer], online[layer][mask])
    # ... and in the training batches, through the one place teacher outputs enter, equal to float32
    # summation order at the real tokens, zero at padding, None at the layer not cached.
    module.eval()
    for batch in datamodule.train_dataloader():
        inputs = module.model_inputs(batch)
        with torch.no_grad():
            cached = module._teacher_outputs(inputs, batch, "train").hidden_states
            online = teacher(**_inputs(batch), output_hidden_states=True).hidden_states
        mask = batch["attention_mask"].bool()
        assert len(cached) == 3 and cached[1] is None
        for layer in (0, 2):
            torch.testing.assert_close(cached[layer][mask], online[layer][mask], rtol=0, atol=1e-5)
            assert not cached[layer][~mask].any()


def test_fp16_cached_hidden_states_are_within_half_precision(data_dir, tmp_path):
    cfg = compose([*TINY_COS, "teacher_cache.enabled=true", "teacher_cache.hidden_layers=[-1]"], tmp_path)
    module, datamodule, _, _ = build_run(cfg)
    module.eval()
    batch = next(iter(datamodule.train_dataloader()))
    with torch.no_grad():
        cached = module._teacher_outputs(module.model_inputs(batch), batch, "train").hidden_states
        online = module.teacher(**_inputs(batch), output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].bool()
    assert cached[0] is None and cached[1] is None
    torch.testing.assert_close(cached[2][mask], online[2][mask], rtol=2**-10, atol=1e-5)
    assert (cached[2][mask] - online[2][mask]).abs().max() > 0  # float16: rounded, not the float32 values


def _fit(cfg):
    module, datamodule, trainer, _ = build_run(cfg)
    calls = []
    module.teacher.register_forward_hook(lambda *args: calls.append(1))
    trainer.fit(module, datamodule=datamodule)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    return module, trainer, metrics, calls


def test_a_cosine_hidden_run_with_the_cache_trains_as_with_the_online_teacher(data_dir, tmp_path):
    online, online_trainer, online_metrics, online_calls = _fit(compose(TINY_COS, tmp_path / "online"))
    cached, cached_trainer, cached_metrics, cached_calls = _fit(compose(
        [*TINY_COS, "teacher_cache.enabled=true", "teacher_cache.dtype=float32", "teacher_cache.hidden_layers=[-1]"],
        tmp_path / "cached"))
    assert online_trainer.global_step == cached_trainer.global_step == 4
    assert online_calls and cached_calls == []  # the cached run never runs the teacher
    assert any("cos" in name for name in cached_metrics) and any(name.startswith("val") for name in cached_metrics)
    assert cached_metrics.keys() == online_metrics.keys()
    for name, value in online_metrics.items():
        assert cached_metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
    for (name, weight), cached_weight in zip(online.student.state_dict().items(), cached.student.state_dict().values()):
        torch.testing.assert_close(cached_weight, weight, rtol=1e-4, atol=1e-5, msg=name)


def test_a_cache_without_a_layer_the_run_needs_is_refused_naming_the_layer(data_dir, tmp_path):
    logits_only = cache_teacher(compose([*TINY_COS, "loss=kd_ce", "stage=cache_teacher"], tmp_path / "a"))
    embeddings = cache_teacher(compose([*TINY_COS, "stage=cache_teacher", "teacher_cache.hidden_layers=[0]",
                                        "loss=kd_ce"], tmp_path / "b"))
    for summary, held in ((logits_only, "no hidden states"), (embeddings, "the teacher's hidden states of layers [0]")):
        cfg = compose([*TINY_COS, f"teacher_cache.path={summary['path']}", "teacher_cache.hidden_layers=[-1]"],
                      tmp_path / "run")
        with pytest.raises(ConfigError, match="does not fit this run") as error:
            build_run(cfg)
        assert (f"missing hidden layers: the cache holds {held}, this run needs layers [2] "
                "(teacher_cache.hidden_layers); layers [2] are not in it") in str(error.value)
    # A cache holding more layers than the run needs serves it.
    both = cache_teacher(compose([*TINY_COS, "stage=cache_teacher", "teacher_cache.hidden_layers=[0,2]"], tmp_path / "c"))
    module, _, _, _ = build_run(compose([*TINY_COS, f"teacher_cache.path={both['path']}", "teacher_cache.hidden_layers=[-1]"],
                                        tmp_path / "d"))
    assert module.teacher_cache.hidden_layers("train") == (0, 2)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["teacher_cache.hidden_layers=[0]"],
         "loss term 'cos' (CosineHidden) reads the teacher's hidden states of layers [2] (0 = embeddings, 2 = last); "
         "layers [2] are not cached (teacher_cache.hidden_layers=[0]). Fix: teacher_cache.hidden_layers=[0, 2]"),
        (["teacher_cache.hidden_layers=[-1]", "loss.terms.cos.loss.teacher_layer=1"],
         "hidden states of layers [1] (0 = embeddings, 2 = last); layers [1] are not cached"),
        (["loss=kd_ce_hidden_mse", "teacher_cache.hidden_layers=[-1]"],  # uniform map: pairs (0, 0), (1, 2)
         "loss term 'hidden' (HiddenStateMSE) reads the teacher's hidden states of layers [0, 2] (0 = embeddings, "
         "2 = last); layers [0] are not cached (teacher_cache.hidden_layers=[-1]). Fix: teacher_cache.hidden_layers=[0, 2]"),
        (["teacher_cache.hidden_layers=[2,5,-4]"],
         "teacher_cache.hidden_layers=[2, 5, -4]: indices [5, -4] are out of range for a teacher with 2 layers"),
        (["teacher_cache.hidden_layers=[last]"], "teacher_cache.hidden_layers=['last']: a list of teacher hidden_states "
                                                 "indices (integers: 0 = embeddings, -1 = last layer)"),
        (["teacher_cache.hidden_layers=2"], "teacher_cache.hidden_layers=2: a list of teacher hidden_states indices"),
    ],
)
def test_hidden_layers_that_cannot_serve_the_loss_are_refused_before_any_work(data_dir, tmp_path, overrides, message):
    cfg = compose([*TINY_COS, "teacher_cache.enabled=true", *overrides], tmp_path)
    with pytest.raises(ConfigError) as error:
        build_run(cfg)
    assert message in str(error.value)
    assert not (tmp_path / "cache" / "teacher_outputs").exists()


def test_hidden_layers_with_a_causal_lm_are_refused(data_dir, tmp_path):
    cfg = compose([*TOKEN_KD, "teacher_cache.enabled=true", "teacher_cache.hidden_layers=[-1]"], tmp_path)
    with pytest.raises(ConfigError, match=r"teacher_cache.hidden_layers=\[-1\]: hidden states are cached for "
                                          r"task=sequence_classification only \(not built for causal_lm\)"):
        build_run(cfg)


def test_the_key_changes_with_the_hidden_layers_and_not_with_their_spelling(data_dir, tmp_path):
    module, datamodule, _, _ = build_run(compose([*TINY_COS, "loss=kd_ce"], tmp_path))
    cfg = compose([*TINY_COS, "loss=kd_ce"], tmp_path)

    def key(layers):
        cfg.teacher_cache.hidden_layers = layers
        return cache_identity(module.teacher, "tiny", datamodule, cfg).key()

    keys = {str(layers): key(layers) for layers in (None, [], [-1], [2], [2, -1], [0, -1], [0])}
    assert keys["None"] == keys["[]"]  # no hidden states: the logits-only key
    assert keys["[-1]"] == keys["[2]"] == keys["[2, -1]"]  # one layer, three spellings
    assert len({keys["None"], keys["[-1]"], keys["[0, -1]"], keys["[0]"]}) == 4
    cfg.teacher_cache.hidden_layers = OmegaConf.create([-1])
    assert cache_identity(module.teacher, "tiny", datamodule, cfg).stored["hidden_layers"] == [2]

"""Attention-head pruning in runs: a BERT student keeps its heads masked to zero and says why; a
Llama student, pruned in heads and FFN neurons together, exports physically smaller and loads in
transformers with the run's perplexity."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_RUN, compose
from safetensors.torch import load_file
from test_causal_lm import TOKEN_KD
from test_pruning import _accuracy_of

from distill.train import build_run, train

HEADS = ["compress=prune_heads", "compress.prune_heads.start_step=1"]


def test_bert_heads_are_masked_not_removed_and_the_export_says_so(data_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    overrides = [*TINY_RUN, *HEADS, "compress.prune_heads.importance=gradient"]
    summary = train(compose([*overrides, "trainer.max_steps=3"], tmp_path))
    compression = summary["student"]["compression"]
    assert compression["method"] == "prune-heads-gradient" and compression["attention_heads"] == {"before": 2, "after": 1}
    assert compression["physically_removed"] is False and "no head_dim" in compression["not_removed_because"]
    weights = load_file(tmp_path / "run" / "student" / "model.safetensors")
    output = weights["bert.encoder.layer.0.attention.output.dense.weight"]  # 2 heads of 16 columns
    zero_heads = [bool((columns == 0).all()) for columns in output.split(16, dim=1)]
    assert sorted(zero_heads) == [False, True]
    pruned = zero_heads.index(True)
    for name in ("query", "key", "value"):
        assert (weights[f"bert.encoder.layer.0.attention.self.{name}.weight"][pruned * 16:(pruned + 1) * 16] == 0).all()
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "student").eval()
    _, datamodule, _, _ = build_run(compose(overrides, tmp_path / "again"))
    assert _accuracy_of(model, datamodule) == pytest.approx(summary["student"]["accuracy"], abs=1e-6)


def test_a_llama_student_pruned_in_heads_and_ffn_exports_smaller_with_the_runs_perplexity(data_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from distill.lm_evaluation import evaluate_causal_lm

    overrides = [*TOKEN_KD, "compress=[prune_ffn,prune_heads]", "compress.prune.start_step=1", *HEADS[1:],
                 "report.save_student=true", "trainer.max_steps=3"]
    summary = train(compose(overrides, tmp_path))
    steps = {step["method"]: step for step in summary["student"]["compression"]["steps"]}
    assert steps["prune-heads-activation"]["attention_heads"] == {"before": 2, "after": 1}
    assert steps["prune-heads-activation"]["physically_removed"] and steps["prune-ffn-activation"]["physically_removed"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "student").eval()
    config = model.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim, config.intermediate_size) == (1, 1, 16, 32)
    assert model.model.layers[0].self_attn.q_proj.weight.shape == (16, 32)
    assert model.model.layers[0].self_attn.o_proj.weight.shape == (32, 16)
    assert summary["student"]["params"] == sum(p.numel() for p in model.parameters())
    module, datamodule, _, _ = build_run(compose(overrides, tmp_path / "again"))
    with torch.no_grad():
        again = evaluate_causal_lm(model, None, datamodule.val_dataloader(), datamodule.token_counts,
                                   vocab_size=module.vocab_size)
    assert again.student_perplexity == pytest.approx(summary["student"]["perplexity"], rel=1e-5)

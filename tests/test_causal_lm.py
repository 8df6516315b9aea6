"""task=causal_lm end to end on tiny Llamas and real WikiText-2 lines: token-level KD with a padded
teacher vocabulary, the report beyond perplexity, and sequence-level KD (stage=generate, then
training on the generations)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_RUN, compose
from distill.errors import ConfigError
from distill.generation import load_generations
from distill.generation.run import generate_stage
from distill.train import build_run, train

#: The shipped experiments with tiny Llamas in SmolLM2's place (one fwd + bwd of the real 135M teacher
#: and its 64M student takes seconds, and converting its GGUF 20 s), so these tests are also the
#: experiments' one-step runs (tests/test_experiments.py leaves them to this file).
TINY_LMS = [
    *(override for override in TINY_RUN if not override.startswith(("teacher=", "student="))),
    "teacher=tiny_llama", "student=tiny_llama",
    "data.max_length=24", "data.batch_size=4", "data.eval_batch_size=4", "data.train_limit=16", "data.eval_limit=4",
    "trainer.max_steps=2", "report.latency_repeats=0", "report.sample_tokens=3", "report.save_student=false",
]
TOKEN_KD = ["experiment=smollm2_token_kd", *TINY_LMS]
SEQ_KD = ["experiment=smollm2_seq_kd", *TINY_LMS]


def test_token_kd_with_a_padded_teacher_vocabulary_reports_agreement_and_samples(data_dir, tmp_path):
    # The teacher pads its embedding matrix to 30,528 rows; the tokenizer (and student) has 30,522.
    cfg = compose([*TOKEN_KD, "teacher.config.vocab_size=30528", "loss.terms.kd.loss.chunk_size=16"], tmp_path)
    module, _, _, _ = build_run(cfg)
    assert module.vocab_size == 30522  # compared on the shared vocabulary, explicitly
    summary = train(cfg)
    lm = summary["language_model"]
    assert summary["metric"] == "perplexity" and summary["student"]["perplexity"] == lm["student_perplexity"]
    assert lm["vocab_size"] == 30522 and lm["tokens"] == 4 * 23  # 4 packed blocks of 24: 23 next tokens each
    for key in ("agreement", "agreement_rare_decile", "agreement_frequent_decile", "student_accuracy_rare_decile"):
        assert 0.0 <= lm[key] <= 1.0, key
    assert summary["perplexity_ratio"] == pytest.approx(lm["student_perplexity"] / lm["teacher_perplexity"])
    assert summary["examples_seen"] == {"kd": 8, "ce": 8}
    samples = (tmp_path / "run" / "samples.md").read_text()
    assert "The capital of France is" in samples and "| teacher | student |" in samples
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["samples"][0]["prompt"] == "The capital of France is"


@pytest.mark.slow
def test_generate_stage_writes_generations_a_seq_kd_run_learns_from(data_dir, tmp_path):
    """experiment=smollm2_seq_kd's two commands: stage=generate, then training on its folder (loss=ce)."""
    folder = tmp_path / "generations"
    stage = [*SEQ_KD, "stage=generate", f"generate.output_dir={folder}", "generate.max_new_tokens=6",
             "generate.max_prompt_length=8", "generate.batch_size=4", "generate.shard_size=3", "generate.prompts.limit=7"]
    written = generate_stage(compose(stage, tmp_path))
    rows = load_generations(folder)
    assert written["rows"] == len(rows) == 7 and rows["prompt_index"] == list(range(7))
    assert len(list(folder.glob("shard-*"))) == 3
    # Training reads the folder as prompt / completion data: only the completions are scored.
    run = compose([*SEQ_KD, f"generate.output_dir={folder}", "data.train_limit=null"], tmp_path)
    module, datamodule, _, _ = build_run(run)
    batch = next(iter(datamodule.train_dataloader()))
    scored = (batch["labels"] != -100).sum(dim=1)
    assert (scored < batch["attention_mask"].sum(dim=1)).all()  # the prompt tokens are not scored
    summary = train(run)
    assert summary["examples_seen"] == {"ce": 7} and summary["language_model"]["tokens"] > 0  # 4 + the last 3
    # The same folder with other settings is refused, naming the difference (nothing is generated).
    with pytest.raises(ConfigError, match=r"(?s)holds generations of other inputs.*max_new_tokens: stored 6, now 7"):
        generate_stage(compose([*stage, "generate.max_new_tokens=7"], tmp_path))
    # An unfinished folder is never read as training data.
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(ConfigError, match=r"train_sources\[0\].file=.*is incomplete: 3 of 3 shards written.*stage=generate"):
        build_run(run)


@pytest.mark.slow
def test_seq2seq_teacher_generates_and_a_t5_student_learns_its_completions(data_dir, tmp_path):
    """The encoder-decoder path: a tiny random T5 teacher writes generations, a tiny T5 student
    learns them with token-level KD on the decoder's target positions (task=seq2seq_lm)."""
    folder = tmp_path / "generations"
    models = ["teacher=tiny_t5", "student=tiny_t5", f"generate.output_dir={folder}"]
    common = [*(override for override in TINY_LMS if not override.startswith(("teacher=", "student="))), *models]
    prompts = f"++generate.prompts={{file: {data_dir / 'wikitext2/wiki.valid.tokens'}, limit: 6}}"
    generate_stage(compose([*common, "stage=generate", "generate.max_new_tokens=5", prompts], tmp_path))
    assert len(load_generations(folder)) == 6
    run = compose([*common, "task=seq2seq_lm", "data=generations_seq2seq", "loss=token_kd", "module.metrics=[]",
                   "data.train_limit=null"], tmp_path)
    module, datamodule, _, _ = build_run(run)
    batch = next(iter(datamodule.train_dataloader()))
    inputs = module.model_inputs(batch)
    # The decoder reads the targets shifted right behind its start token ([PAD] here); the loss rows
    # are the labelled target positions, unshifted.
    assert (inputs["decoder_input_ids"][:, 0] == 0).all()
    assert torch.equal(inputs["decoder_input_ids"][:, 1:][batch["labels"][:, :-1] != -100],
                       batch["labels"][:, :-1][batch["labels"][:, :-1] != -100])
    summary = train(run)
    assert summary["examples_seen"] == {"kd": 6, "ce": 6} and summary["student"]["lm_ce"] > 0


def test_seq2seq_task_refuses_causal_data(tmp_path):
    cfg = compose([*TOKEN_KD, "task=seq2seq_lm", "teacher=tiny_t5", "student=tiny_t5"], tmp_path)
    with pytest.raises(ConfigError, match="task=seq2seq_lm reads prompt / completion pairs from "
                                          "distill.data.Seq2SeqTextDataModule"):
        build_run(cfg)

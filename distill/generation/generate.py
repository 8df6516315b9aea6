"""The teacher's side of sequence-level KD: generate a completion for every prompt, into shards.

Kim & Rush (2016), "Sequence-Level Knowledge Distillation" (arXiv:1606.07947), replace the
teacher's intractable sequence distribution by its approximate mode,
``ŷ = beam_search(argmax_y p_teacher(y | x))``, and train the student with plain cross-entropy on
``(x, ŷ)``: ``L_seq-KD = -log p_student(ŷ | x)``. This module writes the ``(x, ŷ)`` pairs:
:func:`generate_dataset` runs ``model.generate`` on each prompt ``x`` as
:class:`~distill.generation.settings.GenerationSettings` say and stores, per prompt,

- ``prompt``: the prompt text as given (before any truncation),
- ``completion``: the generated text only: for a causal LM the tokens after the prompt, for an
  encoder–decoder the decoder sequence; special tokens skipped,
- ``prompt_index``: the prompt's position in the list,

in shards of ``shard_size`` prompts (:mod:`distill.generation.shards`: staged and renamed,
resumable after a kill). :func:`~distill.generation.shards.load_generations` reads them back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.errors import ConfigError
from distill.generation.settings import GenerationSettings, shard_seed
from distill.generation.shards import STORE_FORMAT, open_store, prompts_sha256
from distill.teacher_cache.identity import weights_sha256

log = logging.getLogger(__name__)

#: ``progress(prompts_done, num_prompts)``, called after every batch (and for skipped shards).
Progress = Callable[[int, int], None]


def is_encoder_decoder(model: nn.Module) -> bool:
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def model_identity(model: nn.Module) -> dict[str, Any]:
    """What decides the teacher's output: its class, parameter count and a SHA-256 of its weights
    (every tensor of the state dict: another checkpoint of the same name is another teacher)."""
    cls = type(model)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "num_parameters": sum(parameter.numel() for parameter in model.parameters()),
        "weights_sha256": weights_sha256(model),
    }


def tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    """The tokenizer's class, size and a SHA-256 of its vocabulary (token -> id)."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return {
        "class": type(tokenizer).__name__,
        "size": len(tokenizer),
        "vocab_sha256": hashlib.sha256(vocab.encode("utf-8")).hexdigest(),
    }


def _model_device(model: nn.Module) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


@contextmanager
def generation_mode(model: nn.Module, tokenizer: Any, settings: GenerationSettings) -> Iterator[None]:
    """The model in eval mode, the tokenizer padding left (causal LMs: prompts end where the
    completion starts), truncating on ``settings.truncation_side`` and with a pad token (its EOS
    token when it has none); everything restored afterwards."""
    was_training = model.training
    saved = {"padding_side": tokenizer.padding_side, "truncation_side": tokenizer.truncation_side}
    added_pad = tokenizer.pad_token is None
    if added_pad:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"{type(tokenizer).__name__} has neither a pad token nor an EOS token to pad prompts with; "
                "set tokenizer.pad_token first"
            )
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    if not is_encoder_decoder(model):
        tokenizer.padding_side = "left"
    tokenizer.truncation_side = settings.truncation_side
    try:
        yield
    finally:
        model.train(was_training)
        tokenizer.padding_side, tokenizer.truncation_side = saved["padding_side"], saved["truncation_side"]
        if added_pad:
            tokenizer.pad_token = None


def seen_prompts(tokenizer: Any, prompts: Sequence[str], input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 settings: GenerationSettings) -> list[str]:
    """The prompts as the model saw them: a prompt that ``max_prompt_length`` cut is replaced by the
    text of its kept tokens (special tokens skipped), so a student trained on the row conditions on
    what the teacher conditioned on; an uncut prompt is kept as given."""
    if settings.max_prompt_length is None:
        return list(prompts)
    lengths = [len(ids) for ids in tokenizer(list(prompts))["input_ids"]]
    return [
        tokenizer.decode(ids[mask.bool()], skip_special_tokens=True) if length > settings.max_prompt_length else prompt
        for prompt, length, ids, mask in zip(prompts, lengths, input_ids, attention_mask)
    ]


def generate_completions(
    model: nn.Module, tokenizer: Any, prompts: Sequence[str], settings: GenerationSettings
) -> tuple[list[str], list[str]]:
    """One batch (call inside :func:`generation_mode`): the prompts as the model saw them (see
    :func:`seen_prompts`) and the generated text only."""
    encoded = tokenizer(
        list(prompts),
        padding=True,
        truncation=settings.max_prompt_length is not None,
        max_length=settings.max_prompt_length,
        return_tensors="pt",
    )
    device = _model_device(model)
    input_ids = encoded["input_ids"].to(device)
    attention_mask = encoded["attention_mask"].to(device)
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pad_token_id=tokenizer.pad_token_id,
            **settings.generate_kwargs(),
        )
    # Causal LM: the output repeats the left-padded prompt, so the new tokens start at one column
    # for every row. Encoder–decoder: the output is the decoder sequence (its start token is special).
    new_tokens = output if is_encoder_decoder(model) else output[:, input_ids.shape[1] :]
    seen = seen_prompts(tokenizer, prompts, encoded["input_ids"], encoded["attention_mask"], settings)
    return seen, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def _generate_shard(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: GenerationSettings,
    seed: int,
    on_batch: Callable[[int], None],
) -> tuple[list[str], list[str]]:
    """The prompts as seen and the completions of one shard, torch seeded with ``seed`` first (the
    caller's RNG state is restored afterwards)."""
    device = _model_device(model)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    seen: list[str] = []
    completions: list[str] = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), settings.batch_size):
            batch = prompts[start : start + settings.batch_size]
            batch_seen, batch_completions = generate_completions(model, tokenizer, batch, settings)
            seen.extend(batch_seen)
            completions.extend(batch_completions)
            on_batch(len(batch))
    return seen, completions


def _check_prompts(prompts: Sequence[str]) -> None:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    if len(prompts) == 0:
        raise ValueError("prompts is empty: nothing to generate")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompts[{index}] is a {type(prompt).__name__}, not a string: {prompt!r:.80}")


def generate_dataset(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: GenerationSettings,
    output_dir: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
) -> Path:
    """Generate a completion for every prompt into ``output_dir`` (see the module doc); returns it.

    Resumable: called again with the same arguments after a kill, it skips the finished shards,
    removes staged leftovers and writes the rest; when everything is written it returns at once.
    Shard ``i`` is generated after seeding torch from ``(settings.seed, i)``, so the rows do not
    depend on where a run was stopped (on one kind of device; GPU kernels may not be bitwise
    deterministic).

    Args:
        model: a transformers ``AutoModelForCausalLM`` or ``AutoModelForSeq2SeqLM`` model, on the
            device to generate on. Put in eval mode for the run, its mode restored after.
        tokenizer: its tokenizer. Prompts are tokenized with its special tokens
            (``add_special_tokens=True``). Its padding side, truncation side and pad token are set
            for the run and restored after.
        prompts: the prompt texts; row ``i`` of the output is prompt ``i``.
        settings: how to decode and shard.
        output_dir: a new or empty folder, or one this call's arguments wrote before (resumed).
        progress: called with ``(prompts_done, num_prompts)`` after every batch.

    Raises:
        ConfigError: bad settings (every problem listed).
        TypeError: prompts that are not a list of strings.
        ValueError: no prompts, or ``output_dir`` holds generations of other prompts, settings,
            model or tokenizer (the differences are named) or other files.
    """
    problems = settings.problems()
    if problems:
        raise ConfigError(problems)
    _check_prompts(prompts)
    num_prompts, shard_size = len(prompts), settings.shard_size
    num_shards = -(-num_prompts // shard_size)
    identity = {
        "format": STORE_FORMAT,
        "settings": settings.to_dict(),
        "num_prompts": num_prompts,
        "prompts_sha256": prompts_sha256(prompts),
        "model": model_identity(model),
        "tokenizer": tokenizer_identity(tokenizer),
    }
    about = {  # recorded to explain a folder, not compared on resume (a path may change, weights may not)
        "model_name_or_path": getattr(getattr(model, "config", None), "_name_or_path", None),
        "tokenizer_name_or_path": getattr(tokenizer, "name_or_path", None),
    }
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, num_prompts)

    with open_store(output_dir, identity, num_shards, about) as store:
        if store.complete:
            log.info("generation: %s is complete (%d prompts), nothing to do", store.folder, num_prompts)
            return store.folder
        with generation_mode(model, tokenizer, settings):
            for index in range(num_shards):
                start, stop = index * shard_size, min(num_prompts, (index + 1) * shard_size)
                if store.has_shard(index):
                    advance(stop - start)
                    continue
                shard_prompts = list(prompts[start:stop])
                seen, completions = _generate_shard(
                    model, tokenizer, shard_prompts, settings, shard_seed(settings.seed, index), advance
                )
                store.write_shard(
                    index, {"prompt": seen, "completion": completions, "prompt_index": list(range(start, stop))}
                )
                log.info("generation: shard %d of %d written (prompts %d..%d)", index + 1, num_shards, start, stop - 1)
        store.mark_complete()
        return store.folder

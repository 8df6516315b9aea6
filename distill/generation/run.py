"""``distill ... stage=generate``: the teacher of the run's config writes its generations.

The ``generate`` config node names the prompts (a text source, one prompt per non-blank text,
cut to ``max_prompt_length`` tokens) and how to decode (:class:`GenerationSettings`); the output
folder (``generate.output_dir``, default ``<run dir>/generations``) then feeds a training run as
``data.train_sources=[{file: <folder>, text_column: prompt, completion_column: completion}]``
(e.g. ``experiment=smollm2_seq_kd``). Every problem is reported before the teacher's weights load;
a stopped stage, run again with the same command, continues where it stopped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from distill.errors import ConfigError
from distill.generation.generate import generate_dataset
from distill.generation.settings import GenerationSettings

log = logging.getLogger(__name__)

#: ``generate`` keys that are not decoding settings.
STAGE_KEYS = ("prompts", "output_dir")


def generate_settings(cfg: DictConfig) -> tuple[GenerationSettings | None, list[str]]:
    """The decoding settings of ``cfg.generate`` and every problem with them (each naming its field)."""
    node = OmegaConf.to_container(cfg.get("generate") or {}, resolve=True)
    names = {field.name for field in fields(GenerationSettings)}
    unknown = sorted(set(node) - names - set(STAGE_KEYS))
    problems = [f"generate.{key}: unknown key (valid: {sorted(names | set(STAGE_KEYS))})" for key in unknown]
    try:
        settings = GenerationSettings(**{key: value for key, value in node.items() if key in names})
    except (TypeError, ValueError) as error:
        return None, [*problems, f"generate: {error}"]
    return settings, problems + settings.problems("generate")


def read_prompts(cfg: DictConfig, problems: list[str]) -> list[str]:
    """The prompt texts of ``generate.prompts`` (a text source, as in ``data.train_sources``)."""
    from distill.data.mlm import TextSource, load_text_source

    value = cfg.generate.get("prompts")
    if value is None:
        problems.append(
            "generate.prompts: name the prompts, a text source such as {file: <path>, text_column: text, "
            "limit: 512} (one prompt per non-blank text)"
        )
        return []
    source, found = TextSource.parse(OmegaConf.to_container(value, resolve=True), "generate.prompts")
    problems.extend(found)
    loaded = None if found or source is None else load_text_source(source, "generate.prompts", problems)
    return [] if loaded is None else [text.strip() for text in loaded[0]["text"]]


def output_folder(cfg: DictConfig) -> Path:
    """Where the generations go: ``generate.output_dir``, else ``<run dir>/generations``."""
    folder = cfg.generate.get("output_dir") or Path(str(cfg.paths.output_dir)) / "generations"
    return Path(str(folder)).expanduser()


def _teacher(cfg: DictConfig):
    """The run's teacher for generation: a causal LM, or a seq2seq model when its config says
    ``is_encoder_decoder``; on the GPU when there is one and the trainer may use it."""
    import torch
    from hydra.utils import instantiate

    from distill.models import ModelSpec, build_model, load_model_config, load_tokenizer

    spec: ModelSpec = instantiate(cfg.teacher)
    task = "seq2seq_lm" if getattr(load_model_config(spec, 0), "is_encoder_decoder", False) else "causal_lm"
    torch.manual_seed(int(cfg.seed))  # a config-built (random) teacher is the same for every run of a seed
    model, _ = build_model(spec, 0, task=task)
    use_gpu = torch.cuda.is_available() and cfg.trainer.get("accelerator", "auto") not in ("cpu",)
    return model.to("cuda" if use_gpu else "cpu"), load_tokenizer(spec)


def generate_stage(cfg: DictConfig) -> dict[str, Any]:
    """Check the ``generate`` node and the prompts, then let the teacher write (or finish writing)
    its generations; returns what was written (folder, rows, seconds)."""
    if not cfg.get("teacher"):
        raise ConfigError(["stage=generate: there is no teacher to generate with (teacher=none)"])
    settings, problems = generate_settings(cfg)
    prompts = read_prompts(cfg, problems)
    if problems:
        raise ConfigError(problems)
    folder = output_folder(cfg)
    model, tokenizer = _teacher(cfg)
    log.info("generating %d prompts x <= %d new tokens (%s) into %s", len(prompts), settings.max_new_tokens,
             settings.strategy, folder)
    started = time.perf_counter()
    last = [started]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 30 or done == total:
            last[0] = time.perf_counter()
            log.info("generated %d / %d prompts (%.0f s)", done, total, last[0] - started)

    try:
        generate_dataset(model, tokenizer, prompts, settings, folder, progress=progress)
    except ValueError as error:  # a folder written with other prompts / settings / teacher
        raise ConfigError([f"generate.output_dir={str(folder)!r}: {error}"]) from error
    seconds = time.perf_counter() - started
    log.info("generations ready: %s (%d rows, %.0f s); train on them with data.train_sources=[{file: %s, "
             "text_column: prompt, completion_column: completion}]", folder, len(prompts), seconds, folder)
    return {"path": str(folder), "rows": len(prompts), "seconds": seconds}

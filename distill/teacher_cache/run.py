"""A run's teacher-output cache: its settings, what refuses it, and where it is found or built.

Settings (``teacher_cache`` in ``conf/train.yaml``):

- ``enabled: true``: look the cache up under ``<paths.cache_dir>/teacher_outputs/<key>`` (the key
  hashes the teacher's weights, the tokenized splits and the storage settings) and build it first
  when it is not there. Every run of a sweep with the same teacher and data finds the same key.
- ``path: <folder>``: read that cache; a cache of another teacher, other data or another
  tokenisation is refused, naming what differs. ``distill stage=cache_teacher teacher_cache.path=...``
  builds it there.
- ``dtype``: ``float16`` (half the bytes; logits off by at most 2^-11 relative) or ``float32``.
- ``batch_size``: the teacher pass's batch size (``null``: 256 examples, ``data.batch_size`` for
  ``causal_lm``, whose logits are tokens x vocabulary).
- ``top_k``, ``temperatures`` (``task: causal_lm``): per scored token the ``top_k`` largest logits,
  their ids and the log-sum-exp of the rest at each temperature (:mod:`distill.losses.topk`); the
  forward KL (``loss=token_kd``) reads them. ``temperatures: null`` stores the run's
  ``loss.temperature``; a sweep over temperatures lists them all so its runs share one cache.
- ``hidden_layers`` (``task: sequence_classification``): teacher ``hidden_states`` indices (0 =
  embeddings, -1 = last) whose hidden states of every non-padding token are stored too
  (:mod:`~distill.teacher_cache.hidden_states`), for losses that read them (``loss=kd_ce_cos``:
  ``[-1]``). ``null``: none.

Refused, before any weights load: no teacher or several teachers; ``masked_lm`` (it masks tokens
at random per epoch, which a cache cannot follow), ``seq2seq_lm``, ``feature_extraction`` (a base
model has no logits); a loss that reads the teacher's attention or modules (not cached), or hidden
states of a layer not in ``hidden_layers`` (:func:`hidden_layer_problems`, once the loss is bound
to the models); ``hidden_layers`` with ``causal_lm`` (not built); with ``causal_lm``, a teacher term
other than the forward KL (reverse KL and the JSD need the whole distribution) or a
``loss.temperature`` the cache does not store.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from distill.data.batching import is_int
from distill.errors import ConfigError
from distill.losses.tokens import TokenForwardKL
from distill.models import load_model_config
from distill.teacher_cache.build import (
    scored_positions_per_example,
    teacher_logits_pass,
    teacher_top_k_pass,
    tokens_per_example,
)
from distill.teacher_cache.hidden_states import normalise_layers
from distill.teacher_cache.identity import CacheIdentity, tokens_sha256, weights_sha256
from distill.teacher_cache.store import STORE_DTYPES, CacheWriter, TeacherOutputCache, build_atomically, open_cache

log = logging.getLogger(__name__)

#: ``stage`` values: ``train`` (the run), ``cache_teacher`` (build the teacher cache, then stop).
RUN_STAGES = ("train", "cache_teacher", "generate")
#: Tasks a teacher cache serves: one logit row per example, or top-k rows per scored token.
CACHED_TASKS = ("sequence_classification", "causal_lm")


def cache_stage(cfg: DictConfig) -> bool:
    """Whether this command only builds the teacher cache (``stage=cache_teacher``)."""
    return cfg.get("stage", "train") == "cache_teacher"


def cache_wanted(cfg: DictConfig) -> bool:
    """Whether the run reads (or this command builds) a teacher cache."""
    settings = cfg.get("teacher_cache") or {}
    return cache_stage(cfg) or bool(settings.get("enabled")) or settings.get("path") is not None


def teacher_cache_problems(cfg: DictConfig, loss) -> list[str]:
    """Every reason the run's ``teacher_cache`` / ``stage`` settings cannot work, from the config alone."""
    problems = []
    stage = cfg.get("stage", "train")
    if stage not in RUN_STAGES:
        problems.append(f"stage={stage!r}: allowed {list(RUN_STAGES)} (cache_teacher: build the teacher cache "
                        "and stop; generate: write the teacher's generations for sequence-level KD and stop)")
    settings = cfg.get("teacher_cache") or {}
    if settings.get("dtype", "float16") not in STORE_DTYPES:
        problems.append(f"teacher_cache.dtype={settings.get('dtype')!r}: allowed {list(STORE_DTYPES)}")
    batch_size = settings.get("batch_size")
    if batch_size is not None and (not is_int(batch_size) or batch_size < 1):
        problems.append(f"teacher_cache.batch_size={batch_size!r}: use an integer >= 1, or null for the default")
    top_k = settings.get("top_k", 64)
    if not is_int(top_k) or top_k < 1:
        problems.append(f"teacher_cache.top_k={top_k!r}: use an integer >= 1 (logits kept per token)")
    problems.extend(_temperature_problems(cfg, settings))
    layers = settings.get("hidden_layers")
    layers_valid = _layers_valid(layers)
    if not layers_valid:
        problems.append(f"teacher_cache.hidden_layers={layers!r}: a list of teacher hidden_states indices (integers: "
                        "0 = embeddings, -1 = last layer), e.g. [-1], or null for none")
    if not isinstance(settings.get("enabled", False), bool):
        problems.append(f"teacher_cache.enabled={settings.get('enabled')!r}: use true or false")
    if not cache_wanted(cfg):
        return problems
    why = _why(cfg)
    if cfg.get("teachers") is not None:
        problems.append(f"{why}: the cache holds one teacher's outputs; with several teachers (teachers=...) leave it off")
    elif not cfg.get("teacher"):
        problems.append(f"{why}: there is no teacher to cache (teacher=none)")
    if cfg.get("task") not in CACHED_TASKS:
        reason = {
            "masked_lm": "masked_lm masks tokens at random in every epoch, so the teacher's outputs change with the data",
            "seq2seq_lm": "the top-k token storage serves decoder-only teachers (causal_lm) for now",
        }.get(cfg.get("task"), "a base model has no logits to cache")
        problems.append(f"{why}: task={cfg.get('task')!r} cannot use the teacher cache ({reason}); "
                        f"allowed: task in {list(CACHED_TASKS)}")
    if layers_valid and layers and cfg.get("task") == "causal_lm":
        problems.append(f"teacher_cache.hidden_layers={list(layers)}: hidden states are cached for "
                        "task=sequence_classification only (not built for causal_lm); leave it null")
    # A run with stages is checked stage by stage (build_run checks each stage's config with its loss).
    # Hidden-state terms are checked once the loss is bound to the models: hidden_layer_problems.
    if loss is not None:
        unread = [name for name, term in loss.terms.items()
                  if term.uses_teacher and (term.captures or term.teacher_modules)]
        if unread:
            problems.append(
                f"{why}: loss terms {unread} read the teacher's attention or modules, which the cache does "
                "not store (it stores logits and, with teacher_cache.hidden_layers, hidden states). Fix: a loss "
                "on logits or hidden states (loss=kd_ce, loss=kd_ce_cos), or teacher_cache.enabled=false"
            )
        if cfg.get("task") == "causal_lm":
            whole = [name for name, term in loss.terms.items() if term.uses_teacher and not isinstance(term, TokenForwardKL)]
            if whole:
                problems.append(
                    f"{why}: loss terms {whole} need the teacher's whole distribution over the vocabulary; a "
                    "causal_lm cache keeps the top-k logits and the tail's mass, which serve the forward KL only. "
                    "Fix: loss=token_kd (with or without ce), or teacher_cache.enabled=false"
                )
    return problems


def _layers_valid(layers) -> bool:
    """``teacher_cache.hidden_layers`` is null or a list of integers (their range needs the teacher)."""
    return layers is None or (
        (OmegaConf.is_list(layers) or isinstance(layers, list | tuple)) and all(is_int(layer) for layer in layers))


def _why(cfg: DictConfig) -> str:
    """The setting that makes the run use a cache, as messages name it."""
    settings = cfg.get("teacher_cache") or {}
    if settings.get("enabled"):
        return "teacher_cache.enabled=true"
    return f"teacher_cache.path={settings.get('path')!r}" if settings.get("path") is not None else "stage=cache_teacher"


def hidden_layer_problems(cfg: DictConfig, losses: list, teacher_layers: int) -> list[str]:
    """Why ``teacher_cache.hidden_layers`` cannot serve the run's losses, once they are bound to
    the models and the teacher's depth (``teacher_layers``) is known, still before weights load:
    an index out of range, or a loss term reading a teacher hidden state not in the list (naming
    the term, the layers and the fix). Empty when the run uses no cache."""
    if not cache_wanted(cfg):
        return []
    settings = cfg.get("teacher_cache") or {}
    listed = settings.get("hidden_layers")
    if not _layers_valid(listed):
        return []  # reported by teacher_cache_problems
    try:
        cached = normalise_layers(list(listed or []), teacher_layers)
    except ValueError as error:
        return [str(error)]
    problems = []
    for loss in losses:
        for name, term in loss.terms.items():
            if not (term.uses_teacher and term.uses_hidden_states):
                continue
            needed = term.teacher_hidden_layers(teacher_layers)
            if needed is None:
                problems.append(f"{_why(cfg)}: loss term {name!r} ({type(term).__name__}) reads the teacher's hidden "
                                "states, but not which layers; the cache cannot serve it. Fix: teacher_cache.enabled=false")
                continue
            missing = [layer for layer in needed if layer not in cached]
            if missing:
                problems.append(
                    f"{_why(cfg)}: loss term {name!r} ({type(term).__name__}) reads the teacher's hidden states of "
                    f"layers {list(needed)} (0 = embeddings, {teacher_layers} = last); layers {missing} are not "
                    f"cached (teacher_cache.hidden_layers={'null' if listed is None else list(listed)}). Fix: "
                    f"teacher_cache.hidden_layers={sorted(set(cached) | set(needed))}, or teacher_cache.enabled=false"
                )
    return problems


def cache_layer_problems(problems: list[str], cfg: DictConfig, teacher_spec, num_labels: int, losses: list) -> None:
    """:func:`hidden_layer_problems` for a run about to be built, joining ``problems``: the teacher's
    depth from its config (``teacher_spec``, a :class:`~distill.models.ModelSpec`; no weights)."""
    if teacher_spec is None or not cache_wanted(cfg) or not losses:
        return
    try:
        depth = int(load_model_config(teacher_spec, num_labels).num_hidden_layers)
    except (OSError, ValueError):
        return  # check_pair reported the config that cannot be read
    problems.extend(p for p in hidden_layer_problems(cfg, losses, depth) if p not in problems)


def cache_hidden_layers(cfg: DictConfig, teacher: nn.Module) -> list[int]:
    """``teacher_cache.hidden_layers`` normalised by the teacher's depth (sorted, ``0..num_hidden_layers``)."""
    listed = (cfg.get("teacher_cache") or {}).get("hidden_layers")
    return normalise_layers(list(listed or []), int(teacher.config.num_hidden_layers))


def cache_temperatures(cfg: DictConfig) -> list[float]:
    """The temperatures a token-level cache stores the tail for: ``teacher_cache.temperatures``, or
    the run's ``loss.temperature``."""
    listed = (cfg.get("teacher_cache") or {}).get("temperatures")
    if listed is None:
        return [float((cfg.get("loss") or {}).get("temperature", 1.0))]
    return [float(value) for value in listed]


def _temperature_problems(cfg: DictConfig, settings) -> list[str]:
    listed = settings.get("temperatures")
    if listed is None:
        return []
    values = list(listed) if OmegaConf.is_list(listed) or isinstance(listed, list | tuple) else None
    if not values or not all(isinstance(value, int | float) and not isinstance(value, bool) and value > 0
                             for value in values):
        return [f"teacher_cache.temperatures={listed!r}: a list of temperatures > 0 (e.g. [1,2,4,8]), or null "
                "for the run's loss.temperature"]
    temperature, stored = (cfg.get("loss") or {}).get("temperature"), cache_temperatures(cfg)
    if cfg.get("task") == "causal_lm" and temperature is not None and float(temperature) not in stored:
        return [f"loss.temperature={temperature}: not among teacher_cache.temperatures={stored}, "
                "which the cache stores the tail mass for; add it to the list"]
    return []


def cache_identity(teacher: nn.Module, teacher_name: str | None, datamodule, cfg: DictConfig) -> CacheIdentity:
    """The identity of the cache this run needs (hashes the teacher's weights and the tokenized
    splits; for causal_lm the splits' ``prompt_length`` column too, which decides the scored positions)."""
    token_level = cfg.get("task") == "causal_lm"
    splits = {
        split: {"examples": len(dataset), "tokens_sha256": tokens_sha256(dataset)}
        for split, (dataset, _) in datamodule.teacher_cache_splits().items()
    }
    teacher_dtype = str(next(teacher.parameters()).dtype).removeprefix("torch.")
    dtype = str(cfg.teacher_cache.dtype)
    stored: dict[str, Any] = {"dtype": dtype, "logits": "full"}
    hidden_layers = cache_hidden_layers(cfg, teacher)
    if hidden_layers:  # absent when none: a logits-only cache keeps its key
        stored["hidden_layers"] = hidden_layers
    if token_level:
        stored = {"dtype": dtype, "logits": "top_k", "top_k": int(cfg.teacher_cache.top_k),
                  "temperatures": cache_temperatures(cfg), "vocab_size": token_vocab_size(teacher, datamodule)}
    return CacheIdentity(
        teacher_sha256=weights_sha256(teacher),
        splits=splits,
        stored=stored,
        about={
            "teacher": {"name_or_path": teacher_name, "dtype": teacher_dtype},
            "sources": dict(datamodule.data_sources),
            "tokenizer": getattr(datamodule.tokenizer, "name_or_path", None),
            "max_length": datamodule.max_length,
        },
    )


def token_vocab_size(teacher: nn.Module, datamodule) -> int:
    """The logits a token-level cache ranks: the tokenizer's vocabulary when the teacher pads its
    embedding past it (as :func:`~distill.validation.model_pair.shared_vocabulary` compares them)."""
    return min(len(datamodule.tokenizer), int(teacher.config.vocab_size))


def build_cache(folder: Path, teacher: nn.Module, datamodule, identity: CacheIdentity, batch_size: int) -> None:
    """Run the teacher over every split of ``datamodule`` into the (staged) ``folder``."""
    writer = CacheWriter(folder, identity, identity.stored["dtype"])
    collate = datamodule.collator()
    for split, (dataset, lengths) in datamodule.teacher_cache_splits().items():
        if identity.stored["logits"] == "top_k":
            out = writer.token_split(
                split, scored_positions_per_example(dataset, collate), identity.stored["top_k"],
                identity.stored["temperatures"], identity.stored["vocab_size"],
            )
            teacher_top_k_pass(teacher, dataset, lengths, collate, out, batch_size=batch_size,
                               vocab_size=identity.stored["vocab_size"], split=split)
            continue
        out = writer.split(split, len(dataset), int(teacher.config.num_labels))
        hidden = None
        if identity.stored.get("hidden_layers"):
            hidden = writer.hidden_split(split, tokens_per_example(dataset, collate), identity.stored["hidden_layers"],
                                         int(teacher.config.hidden_size), int(teacher.config.num_hidden_layers))
        teacher_logits_pass(teacher, dataset, lengths, collate, out, batch_size=batch_size, split=split, hidden=hidden)
    writer.finish()


def _pass_batch_size(cfg: DictConfig) -> int:
    size = cfg.teacher_cache.get("batch_size")
    if size is not None:
        return int(size)
    return int(cfg.data.batch_size) if cfg.get("task") == "causal_lm" else 256


def prepare_teacher_cache(cfg: DictConfig, teacher: nn.Module, teacher_name: str | None, datamodule) -> TeacherOutputCache | None:
    """The cache this run reads, found or built as the settings say (``None`` when it uses none).

    Raises:
        ConfigError: ``teacher_cache.path`` holds no complete cache, or one of another teacher /
            other data / other settings (each difference named).
    """
    if not cache_wanted(cfg):
        return None
    settings = cfg.teacher_cache
    identity = cache_identity(teacher, teacher_name, datamodule, cfg)
    path = settings.get("path")
    folder = Path(str(path)).expanduser() if path is not None else (
        Path(str(cfg.paths.cache_dir)).expanduser() / "teacher_outputs" / identity.key())
    existing = open_cache(folder)
    if existing is None and path is not None and not cache_stage(cfg):
        raise ConfigError([
            f"teacher_cache.path={str(path)!r}: no complete teacher cache there ({folder.resolve()}). Build it "
            f"with the run's own overrides plus `stage=cache_teacher teacher_cache.path={path}`, or use "
            "teacher_cache.enabled=true to build and find it by key under paths.cache_dir"
        ])
    if existing is not None:  # opened once: build_atomically would open it again
        cache, built = existing, False
    else:
        cache, built = build_atomically(
            folder, lambda staged: build_cache(staged, teacher, datamodule, identity, _pass_batch_size(cfg))
        )
    _refuse_mismatch(cache, identity, folder)  # a cache found at teacher_cache.path may be another's
    log.info(
        "teacher cache: %s %s (%.1f MiB, %s)", "built" if built else "reading", folder, cache.size_bytes() / 2**20,
        ", ".join(f"{split}: {cache.num_examples(split)} examples" for split in cache.splits),
    )
    return cache


def _refuse_mismatch(cache: TeacherOutputCache, identity: CacheIdentity, folder: Path) -> None:
    reasons = identity.mismatches(cache.identity)
    if reasons:
        raise ConfigError([f"teacher cache {folder} does not fit this run: {reason}" for reason in reasons] + [
            "Fix: point teacher_cache.path at the cache built for this teacher and data, or build one with "
            "stage=cache_teacher (teacher_cache.enabled=true finds or builds the matching cache by itself)"
        ])


def cache_summary(cache: TeacherOutputCache) -> dict[str, Any]:
    """What ``metrics.json`` records of the cache a run read."""
    return {
        "path": str(cache.folder),
        "key": cache.identity.key(),
        "bytes": cache.size_bytes(),
        "examples": {split: cache.num_examples(split) for split in cache.splits},
        "dtype": cache.identity.stored["dtype"],
        "hidden_layers": cache.identity.stored.get("hidden_layers"),
        "build_seconds": cache.manifest.get("build_seconds"),
    }


__all__ = [
    "RUN_STAGES",
    "cache_identity",
    "cache_stage",
    "cache_summary",
    "cache_wanted",
    "hidden_layer_problems",
    "prepare_teacher_cache",
    "teacher_cache_problems",
]

"""A run's teacher-output cache: its settings, what refuses it, and where it is found or built.

Settings (``teacher_cache`` in ``conf/train.yaml``):

- ``enabled: true``: look the cache up under ``<paths.cache_dir>/teacher_outputs/<key>`` (the key
  hashes the teacher's weights, the tokenized splits and the storage settings) and build it first
  when it is not there. Every run of a sweep with the same teacher and data finds the same key.
- ``path: <folder>``: read that cache; a cache of another teacher, other data or another
  tokenisation is refused, naming what differs. ``distill stage=cache_teacher teacher_cache.path=...``
  builds it there.
- ``dtype``: ``float16`` (half the bytes; logits off by at most 2^-11 relative) or ``float32``.
- ``batch_size``: the teacher pass's batch size.

Refused, before any weights load: no teacher or several teachers; a task other than
``sequence_classification`` (``masked_lm`` masks tokens at random per epoch, which a cache cannot
follow; a base model has no logits); a loss that reads the teacher's hidden states, attention or
modules (only logits are cached).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from distill.data.batching import is_int
from distill.errors import ConfigError
from distill.teacher_cache.build import teacher_logits_pass
from distill.teacher_cache.identity import CacheIdentity, tokens_sha256, weights_sha256
from distill.teacher_cache.store import STORE_DTYPES, CacheWriter, TeacherOutputCache, build_atomically, open_cache

log = logging.getLogger(__name__)

#: ``stage`` values: ``train`` (the run), ``cache_teacher`` (build the teacher cache, then stop).
RUN_STAGES = ("train", "cache_teacher", "generate")


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
    batch_size = settings.get("batch_size", 256)
    if not is_int(batch_size) or batch_size < 1:
        problems.append(f"teacher_cache.batch_size={batch_size!r}: use an integer >= 1")
    if not isinstance(settings.get("enabled", False), bool):
        problems.append(f"teacher_cache.enabled={settings.get('enabled')!r}: use true or false")
    if not cache_wanted(cfg):
        return problems
    why = "teacher_cache.enabled=true" if settings.get("enabled") else (
        f"teacher_cache.path={settings.get('path')!r}" if settings.get("path") is not None else "stage=cache_teacher")
    if cfg.get("teachers") is not None:
        problems.append(f"{why}: the cache holds one teacher's outputs; with several teachers (teachers=...) leave it off")
    elif not cfg.get("teacher"):
        problems.append(f"{why}: there is no teacher to cache (teacher=none)")
    if cfg.get("task") != "sequence_classification":
        reason = {
            "masked_lm": "masked_lm masks tokens at random in every epoch, so the teacher's outputs change with the data",
            "causal_lm": "a token-level teacher's logits are tokens x 49k-entry vocabularies; the top-k storage it "
                         "needs (distill/losses/topk.py) is not wired into runs yet",
            "seq2seq_lm": "a token-level teacher's logits are tokens x vocabulary entries; the top-k storage it "
                          "needs (distill/losses/topk.py) is not wired into runs yet",
        }.get(cfg.get("task"), "a base model has no logits to cache")
        problems.append(f"{why}: task={cfg.get('task')!r} cannot use the teacher cache ({reason}); "
                        "allowed: task=sequence_classification")
    # A run with stages is checked stage by stage (build_run checks each stage's config with its loss).
    if loss is not None:
        unread = [name for name, term in loss.terms.items()
                  if term.uses_teacher and (term.uses_hidden_states or term.captures or term.teacher_modules)]
        if unread:
            problems.append(
                f"{why}: loss terms {unread} read the teacher's hidden states, attention or modules, "
                "and the cache stores logits only. Fix: a logit-only loss (loss=kd_ce, loss=kd), or "
                "teacher_cache.enabled=false"
            )
    return problems


def cache_identity(teacher: nn.Module, teacher_name: str | None, datamodule, dtype: str) -> CacheIdentity:
    """The identity of the cache this run needs (hashes the teacher's weights and the tokenized splits)."""
    splits = {
        split: {"examples": len(dataset), "tokens_sha256": tokens_sha256(dataset)}
        for split, (dataset, _) in datamodule.teacher_cache_splits().items()
    }
    teacher_dtype = str(next(teacher.parameters()).dtype).removeprefix("torch.")
    return CacheIdentity(
        teacher_sha256=weights_sha256(teacher),
        splits=splits,
        stored={"dtype": dtype, "logits": "full"},
        about={
            "teacher": {"name_or_path": teacher_name, "dtype": teacher_dtype},
            "sources": dict(datamodule.data_sources),
            "tokenizer": getattr(datamodule.tokenizer, "name_or_path", None),
            "max_length": datamodule.max_length,
        },
    )


def build_cache(folder: Path, teacher: nn.Module, datamodule, identity: CacheIdentity, batch_size: int) -> None:
    """Run the teacher over every split of ``datamodule`` into the (staged) ``folder``."""
    writer = CacheWriter(folder, identity, identity.stored["dtype"])
    num_logits = int(teacher.config.num_labels)
    for split, (dataset, lengths) in datamodule.teacher_cache_splits().items():
        out = writer.split(split, len(dataset), num_logits)
        teacher_logits_pass(
            teacher, dataset, lengths, datamodule.collator(), out, batch_size=batch_size, split=split
        )
    writer.finish()


def prepare_teacher_cache(cfg: DictConfig, teacher: nn.Module, teacher_name: str | None, datamodule) -> TeacherOutputCache | None:
    """The cache this run reads, found or built as the settings say (``None`` when it uses none).

    Raises:
        ConfigError: ``teacher_cache.path`` holds no complete cache, or one of another teacher /
            other data / other settings (each difference named).
    """
    if not cache_wanted(cfg):
        return None
    settings = cfg.teacher_cache
    identity = cache_identity(teacher, teacher_name, datamodule, str(settings.dtype))
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
            folder, lambda staged: build_cache(staged, teacher, datamodule, identity, int(settings.batch_size))
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
        "build_seconds": cache.manifest.get("build_seconds"),
    }


__all__ = [
    "RUN_STAGES",
    "cache_identity",
    "cache_stage",
    "cache_summary",
    "cache_wanted",
    "prepare_teacher_cache",
    "teacher_cache_problems",
]

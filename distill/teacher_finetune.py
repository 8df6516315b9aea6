"""Fine-tune a teacher on the run's own data first (no-teacher mode), cached across runs.

A teacher config with ``finetune: {max_steps: ...}`` names a base model (e.g. MiniLM without a
task head). Its fine-tuned form is stored under ``<cache_dir>/teachers/<key>/`` where the key
hashes everything that determines it (model, data, settings and the teacher's own
``finetune.seed``, not the run's seed), so a sweep, a second run or a run with another student
seed reuses it instead of training it again. The folder appears only once it is complete; runs that
need it at the same time fine-tune it once (a file lock), the others wait and reuse it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from filelock import FileLock
from transformers import get_scheduler

from distill.callbacks import StepProgressBar
from distill.export import save_student
from distill.losses import HardLabelCE, LossMix, RegressionMSE
from distill.models import ModelSpec, build_model
from distill.models.spec import FINETUNE_DEFAULTS
from distill.module import DistillationModule

log = logging.getLogger(__name__)

def finetune_settings(spec: ModelSpec) -> dict[str, Any]:
    """``spec.finetune`` over the defaults (its keys were validated with the spec)."""
    return {**FINETUNE_DEFAULTS, **spec.finetune}


def cache_key(spec: ModelSpec, data_identity: dict[str, Any]) -> str:
    """Hash of what decides the fine-tuned weights."""
    identity = {
        "name_or_path": spec.name_or_path,
        "config": spec.config,
        "config_overrides": spec.config_overrides,
        "finetune": finetune_settings(spec),
        "data": data_identity,
        "version": 2,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finetuned_teacher_path(
    spec: ModelSpec,
    datamodule: L.LightningDataModule,
    data_identity: dict[str, Any],
    *,
    cache_dir: str | Path,
    accelerator: str = "auto",
    progress_bar: bool = True,
) -> Path:
    """Folder of the fine-tuned teacher: from the cache, or trained now and cached (with a progress
    bar labelled ``teacher fine-tune`` unless ``progress_bar`` is false)."""
    target = Path(cache_dir).expanduser() / "teachers" / cache_key(spec, data_identity)
    if (target / "config.json").is_file():
        log.info("teacher: reusing fine-tuned weights from %s", target)
        return target
    locks = Path(cache_dir).expanduser() / "locks" / "teachers"  # beside, not among, the teacher folders
    locks.mkdir(parents=True, exist_ok=True)
    # Runs started together (a sweep under the joblib launcher) fine-tune once: the others wait, then reuse.
    with FileLock(locks / f"{target.name}.lock"):
        if (target / "config.json").is_file():
            log.info("teacher: reusing fine-tuned weights from %s (fine-tuned by another run meanwhile)", target)
            return target
        return _finetune(spec, datamodule, target, accelerator=accelerator, progress_bar=progress_bar)


def _finetune(spec: ModelSpec, datamodule: L.LightningDataModule, target: Path, *, accelerator: str,
              progress_bar: bool) -> Path:
    settings = finetune_settings(spec)
    log.info("teacher: fine-tuning %s for %d steps -> %s", spec.name_or_path, settings["max_steps"], target)
    seed = int(settings["seed"])
    L.seed_everything(seed, workers=True)
    num_labels = datamodule.num_labels
    base = ModelSpec(name_or_path=spec.name_or_path, config=spec.config, config_overrides=spec.config_overrides)
    model, _ = build_model(base, num_labels, label_names=datamodule.label_names)
    label_term = RegressionMSE() if num_labels == 1 else HardLabelCE()
    module = DistillationModule(
        student=model,
        loss=LossMix({"ce": {"weight": 1.0, "loss": label_term}}),
        optimizer=partial(
            torch.optim.AdamW, lr=settings["lr"], weight_decay=settings["weight_decay"], fused=True
        ),
        scheduler=partial(get_scheduler, "linear"),
        warmup_ratio=settings["warmup_ratio"],
        num_labels=num_labels,
        metrics=(),  # it trains without validating (limit_val_batches=0): no metrics, whatever the task
    )
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=settings["max_steps"],
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        enable_model_summary=False,
        enable_progress_bar=progress_bar,
        callbacks=[StepProgressBar(label="teacher fine-tune", leave=True)] if progress_bar else [],
    )
    # One device: even inside a DDP process (a later stage), this process fine-tunes on all the data.
    trainer.fit(module, train_dataloaders=datamodule.train_dataloader(seed=seed, transfer=False, sharded=False))
    save_student(model, datamodule.tokenizer, target)  # atomic: the folder appears complete
    return target

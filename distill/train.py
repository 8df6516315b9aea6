"""``train(cfg)``: validate, build, fit, evaluate, report and save, for one run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from distill.export import save_student
from distill.models import ModelSpec, build_model, count_parameters, load_tokenizer
from distill.module import DistillationModule
from distill.report import compare, measure_latency, render_table, write_json_atomic
from distill.teacher_finetune import finetuned_teacher_path
from distill.validation import ConfigError, check_model_pair, check_run_config

log = logging.getLogger(__name__)


def _data_identity(cfg: DictConfig) -> dict[str, Any]:
    """The data settings that decide what a model trained on this data learns (for cache keys)."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    for key in ("batch_size", "eval_batch_size", "num_workers", "eval_limit", "eval_file", "seed"):
        data.pop(key, None)
    data["batch_size"] = cfg.data.batch_size  # the fine-tuning uses the run's batch size
    return data


def _instantiate_all(nodes: DictConfig | None) -> list:
    if not nodes:
        return []
    return [instantiate(node) for node in nodes.values() if node is not None and "_target_" in node]


def build_run(cfg: DictConfig) -> tuple[DistillationModule, L.LightningDataModule, L.Trainer, dict]:
    """Everything a run needs, with every config problem raised before weights load."""
    problems, teacher_spec, student_spec = check_run_config(cfg)
    if problems:
        raise ConfigError(problems)

    teacher_tokenizer = load_tokenizer(teacher_spec) if teacher_spec is not None else None
    if student_spec.init_from_teacher_layers is not None and not student_spec.init_source:
        student_tokenizer = teacher_tokenizer
    else:
        student_tokenizer = load_tokenizer(student_spec, fallback=teacher_tokenizer)
    loss = instantiate(cfg.loss)
    num_labels = int(cfg.data.num_labels)
    problems = check_model_pair(
        teacher_spec, student_spec, num_labels, loss, teacher_tokenizer, student_tokenizer
    )
    datamodule = instantiate(cfg.data, tokenizer=student_tokenizer)
    try:
        datamodule.prepare()
    except ValueError as error:
        problems.extend(getattr(error, "problems", [str(error)]))
    if problems:
        raise ConfigError(problems)

    # Seed before any model is built: a config-built (random) teacher must be the same on every
    # rank, since the teacher is not a registered module and DDP does not broadcast it.
    L.seed_everything(int(cfg.seed), workers=True)
    teacher = None
    if teacher_spec is not None:
        if teacher_spec.finetune:
            folder = finetuned_teacher_path(
                teacher_spec,
                datamodule,
                _data_identity(cfg),
                cache_dir=cfg.paths.cache_dir,
                accelerator=cfg.trainer.get("accelerator", "auto"),
            )
            teacher_spec = ModelSpec(name_or_path=str(folder), dtype=teacher_spec.dtype)
        teacher, untrained = build_model(
            teacher_spec, num_labels, task=cfg.task, label_names=datamodule.label_names
        )
        head = sorted(name for name in untrained if not name.endswith("position_ids"))
        if teacher_spec.name_or_path is not None and head:
            raise ConfigError(
                [
                    f"teacher.name_or_path={teacher_spec.name_or_path!r} has untrained weights "
                    f"{head[:4]}{' ...' if len(head) > 4 else ''}: it has no task head for this data. "
                    "Set teacher.finetune={max_steps: N} to fine-tune it first, or point "
                    "teacher.name_or_path at a fine-tuned checkpoint"
                ]
            )
    L.seed_everything(int(cfg.seed), workers=True)
    student, _ = build_model(
        student_spec, num_labels, task=cfg.task, teacher=teacher, label_names=datamodule.label_names
    )
    module = DistillationModule(
        student=student,
        teacher=teacher,
        loss=loss,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        warmup_ratio=float(cfg.module.warmup_ratio),
        num_labels=num_labels,
        metrics=list(cfg.module.metrics),
        run_config=OmegaConf.to_container(cfg, resolve=True),
    )
    loggers = _instantiate_all(cfg.get("logger"))
    callbacks = _instantiate_all(cfg.get("callbacks"))
    if not loggers:  # a learning-rate monitor has nowhere to write without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return module, datamodule, trainer, {"teacher_spec": teacher_spec, "tokenizer": student_tokenizer}


def evaluate_models(module: DistillationModule, datamodule, trainer: L.Trainer, cfg: DictConfig) -> dict:
    """Dev metrics of student (and teacher), parameters and CPU latency per batch."""
    results = trainer.validate(module, datamodule=datamodule, verbose=False)
    scores = results[0] if results else {}  # empty when trainer.limit_val_batches=0
    metric_names = list(cfg.module.metrics)
    batch = next(iter(datamodule.val_dataloader()))
    size = int(cfg.report.latency_batch_size)
    inputs = {key: value[:size] for key, value in batch.items() if key != "labels"}

    def figures(model, prefix: str) -> dict[str, Any]:
        result = {
            name: float(scores[f"{prefix}{name}"]) if f"{prefix}{name}" in scores else None
            for name in metric_names
        }
        result["params"] = count_parameters(model)
        if cfg.report.latency_repeats:
            result["latency_ms"] = measure_latency(
                model.to("cpu"), inputs, repeats=int(cfg.report.latency_repeats)
            )
        return result

    teacher = figures(module.teacher, "val/teacher/") if module.teacher is not None else None
    student = figures(module.student, "val/")
    if teacher is not None and "val/teacher_accuracy" in scores:
        student["teacher_agreement"] = float(scores["val/teacher_accuracy"])
    return compare(teacher, student, metric_names[0])


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one distillation (or fine-tuning) job and return its ``metrics.json`` content."""
    module, datamodule, trainer, extras = build_run(cfg)
    log.info("objective: %s", module.loss.formula())
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    summary = evaluate_models(module, datamodule, trainer, cfg)
    output_dir = Path(cfg.paths.output_dir)
    _write_outputs(summary, module, extras["tokenizer"], output_dir, cfg)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):  # close the run, or the next run of a sweep appends to it
            logger.experiment.finish()
    return summary


@rank_zero_only
def _write_outputs(summary: dict, module: DistillationModule, tokenizer, output_dir: Path, cfg) -> None:
    summary["objective"] = module.loss.formula()
    summary["output_dir"] = str(output_dir)
    if cfg.report.save_student:
        summary["student"]["path"] = str(save_student(module.student, tokenizer, output_dir / "student"))
    write_json_atomic(output_dir / "metrics.json", summary)
    render_table(summary)

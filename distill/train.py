"""``train(cfg)``: validate, build, fit, evaluate (:mod:`distill.evaluation`), report and save, for one run."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Checkpoint, LearningRateMonitor, ProgressBar
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from distill.atomic import write_atomic, write_json_atomic
from distill.callbacks import PreemptionCheckpoint, StepTimes, StudentCompression
from distill.checkpoints import AtomicCheckpointIO
from distill.errors import Preempted
from distill.evaluation import evaluate_models
from distill.export import save_student, size_on_disk
from distill.lm_evaluation import samples_markdown
from distill.models import ModelSpec, build_model, count_nonzero_parameters, load_tokenizer
from distill.module import DistillationModule, TeacherEnsemble
from distill.preflight import (
    check_pair,
    ensemble_tokenizer,
    prepared_data,
    refuse_foreign_checkpoint,
    resumed_stage,
    tokenizer_or_problem,
)
from distill.report import render_language_model, render_table
from distill.run_folder import log_saved_paths
from distill.stages import STAGE_KEYS, stage_configs, stage_problems  # noqa: F401 - re-exported
from distill.pruning.depth import choose_student_layers
from distill.teacher_cache import TeacherOutputCache
from distill.teacher_cache.run import cache_layer_problems, cache_summary, prepare_teacher_cache
from distill.teacher_finetune import finetuned_teacher_path
from distill.validation import ConfigError, check_model_pair, check_run_config, check_teachers, run_num_labels
from distill.validation.compress import compress_callbacks
from distill.validation.model_pair import shared_vocabulary

log = logging.getLogger(__name__)

def _data_identity(cfg: DictConfig) -> dict[str, Any]:
    """The data settings that decide what a model trained on this data learns (for cache keys).

    The batch size stays in (the fine-tuning uses the run's); the run's seed does not (a teacher
    has its own, ``teacher.finetune.seed``), nor does the transfer set (fine-tuning uses labels only).
    The training file is named by its real path, so ``../data/x.tsv`` and ``/abs/data/x.tsv`` (one
    file, two spellings: make's DISTILL_DATA_DIR and a shell's) share one cache entry.
    """
    data = OmegaConf.to_container(cfg.data, resolve=True)
    for key in ("eval_batch_size", "num_workers", "eval_limit", "eval_file", "seed", "transfer"):
        data.pop(key, None)
    if data.get("train_file") is not None:
        data["train_file"] = os.path.realpath(os.path.expanduser(str(data["train_file"])))
    return data


def _instantiate_all(nodes: DictConfig | None) -> list:
    if not nodes:
        return []
    return [instantiate(node) for node in nodes.values() if node is not None and "_target_" in node]


def make_module(
    cfg: DictConfig, student, teacher, loss, num_labels: int, ensemble: TeacherEnsemble | None = None,
    teacher_cache: TeacherOutputCache | None = None,
    tokenizer=None,
) -> DistillationModule:
    vocab_size = shared_vocabulary(str(cfg.task), tokenizer, getattr(teacher, "config", None), student.config)
    if vocab_size is not None:
        log.info("token logits compared on the tokenizer's %d tokens (teacher vocab_size %s, student %s)",
                 vocab_size, getattr(getattr(teacher, "config", None), "vocab_size", None), student.config.vocab_size)
    return DistillationModule(
        student=student,
        teacher=teacher,
        ensemble=ensemble,
        loss=loss,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        warmup_ratio=float(cfg.module.warmup_ratio),
        num_labels=num_labels,
        metrics=list(cfg.module.metrics),
        task=str(cfg.task),
        run_config=OmegaConf.to_container(cfg, resolve=True),
        nonfinite=str(cfg.module.get("nonfinite", "stop")),
        max_skipped_batches=int(cfg.module.get("max_skipped_batches", 0)),
        teacher_cache=teacher_cache,
        vocab_size=vocab_size,
    )


#: Trainer flags that switch off what a callback does; Lightning refuses both together.
FLAG_CALLBACKS = {"enable_progress_bar": ProgressBar, "enable_checkpointing": Checkpoint}


def make_trainer(cfg: DictConfig) -> L.Trainer:
    """The run's Trainer with its loggers and callbacks. A Trainer flag turned off
    (``trainer.enable_progress_bar=false``, ``trainer.enable_checkpointing=false``) drops the
    callbacks it clashes with (``callbacks.progress_bar``, ``callbacks.model_checkpoint``).

    Every trainer also gets :class:`PreemptionCheckpoint` (a full ``last.ckpt`` on SIGTERM, unless
    ``trainer.enable_checkpointing=false``) and, unless ``trainer.plugins`` names its own,
    :class:`AtomicCheckpointIO` (checkpoints written whole or not at all), and :class:`StepTimes`
    (``metrics.json`` ``timing``)."""
    loggers = _instantiate_all(cfg.get("logger"))
    callbacks = _instantiate_all(cfg.get("callbacks")) + _instantiate_all(cfg.get("compress"))
    if not loggers:  # a learning-rate monitor has nowhere to write without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    for flag, kind in FLAG_CALLBACKS.items():
        clashing = [c for c in callbacks if isinstance(c, kind)]
        if clashing and not cfg.trainer.get(flag, True):
            callbacks = [c for c in callbacks if not isinstance(c, kind)]
            log.info("trainer.%s=false: running without %s", flag, ", ".join(type(c).__name__ for c in clashing))
    if cfg.trainer.get("enable_checkpointing", True):
        callbacks.append(PreemptionCheckpoint(dirpath=f"{cfg.paths.output_dir}/checkpoints"))
    callbacks.append(StepTimes())  # metrics.json "timing": median step and fit wall time
    plugins = {} if cfg.trainer.get("plugins") else {"plugins": [AtomicCheckpointIO()]}
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **plugins)


def _fit(trainer: L.Trainer, module, datamodule, stage: str | None, ckpt_path: str | None = None) -> None:
    """``trainer.fit``; a SIGTERM (or SIGUSR1 under SLURM) that stops it becomes :class:`Preempted`,
    naming the step and the checkpoint :class:`PreemptionCheckpoint` wrote."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException:
        saver = next((c for c in trainer.callbacks if isinstance(c, PreemptionCheckpoint)), None)
        step, path = saver.saved if saver is not None and saver.saved else (trainer.global_step, None)
        raise Preempted(step, path, stage) from None


def _teacher_model(cfg: DictConfig, spec: ModelSpec, datamodule, num_labels: int, field: str):
    """Build one teacher (fine-tuned first through the cache when ``spec.finetune``); returns the
    model and the spec it was built from. A base model without a task head is refused."""
    if spec.finetune:
        folder = finetuned_teacher_path(
            spec,
            datamodule,
            _data_identity(cfg),
            cache_dir=cfg.paths.cache_dir,
            accelerator=cfg.trainer.get("accelerator", "auto"),
            progress_bar=bool(cfg.trainer.get("enable_progress_bar", True)),
        )
        spec = ModelSpec(name_or_path=str(folder), dtype=spec.dtype)
    model, untrained = build_model(spec, num_labels, task=cfg.task, label_names=datamodule.label_names)
    head = sorted(name for name in untrained if not name.endswith("position_ids"))
    if spec.name_or_path is not None and head:
        raise ConfigError(
            [
                f"{field}.name_or_path={spec.name_or_path!r} has untrained weights "
                f"{head[:4]}{' ...' if len(head) > 4 else ''}: it has no task head for this data. "
                f"Set {field}.finetune={{max_steps: N}} to fine-tune it first, or point "
                f"{field}.name_or_path at a fine-tuned checkpoint"
            ]
        )
    return model, spec


def build_run(
    cfg: DictConfig,
    later_stages: list[DictConfig] = (),
    *,
    check_checkpoint: bool = True,
    known_problems: list[str] = (),
) -> tuple[DistillationModule, L.LightningDataModule, L.Trainer, dict]:
    """Everything a run needs, with every config problem raised before weights load.

    ``later_stages`` (configs of the stages after the first) are validated too; their losses,
    bound to the models, come back in ``extras["later_losses"]``. With ``teachers`` (several
    teachers) see :func:`_build_ensemble_run`. ``check_checkpoint=False`` leaves the check that
    ``ckpt_path`` holds this module to the caller (a multi-stage run checks the stage it resumes).
    ``known_problems`` (the stages' own, say) are reported with the rest.
    """
    problems, teacher_spec, student_spec = check_run_config(cfg)
    problems[:0] = known_problems
    for stage in later_stages:
        problems.extend(p for p in check_run_config(stage)[0] if p not in problems)
    if cfg.get("teachers") is not None:
        return _build_ensemble_run(cfg, student_spec, problems)

    # One pass: what the model configs, tokenizers and data say joins the config's problems, so a run
    # is refused once with all of them (nothing is tokenized and no weights load before that).
    teacher_tokenizer = tokenizer_or_problem(teacher_spec, "teacher", problems)
    student_tokenizer = None
    if student_spec is not None:
        if student_spec.init_from_teacher_layers is not None and not student_spec.init_source:
            student_tokenizer = teacher_tokenizer
        else:
            student_tokenizer = tokenizer_or_problem(student_spec, "student", problems, fallback=teacher_tokenizer)
    # A loss with a problem of its own (an unknown key, a bad temperature) is not built again.
    loss = None if any(p.startswith("loss") for p in problems) else instantiate(cfg.loss)
    later_losses = [instantiate(stage.loss) for stage in later_stages] if loss is not None else []
    num_labels = run_num_labels(cfg)
    specs_sound = not any(p.startswith(("teacher", "student")) and not p.startswith("teacher_cache") for p in problems)
    if student_spec is not None and specs_sound:
        compress = [] if any(p.startswith("compress") for p in problems) else compress_callbacks(cfg, problems)
        check_pair(
            problems, teacher_spec, student_spec, num_labels, loss, teacher_tokenizer, student_tokenizer,
            task=cfg.task, compress=compress,
        )
        for later_loss in later_losses:
            check_pair(problems, teacher_spec, student_spec, num_labels, later_loss, None, None, task=cfg.task)
        if loss is not None:  # bound now: which teacher hidden states each term reads is known
            cache_layer_problems(problems, cfg, teacher_spec, num_labels, [loss, *later_losses])
    datamodule = prepared_data(cfg, student_tokenizer or teacher_tokenizer, problems)

    # Seed before any model is built: a config-built (random) teacher must be the same on every
    # rank, since the teacher is not a registered module and DDP does not broadcast it.
    L.seed_everything(int(cfg.seed), workers=True)
    teacher = None
    if teacher_spec is not None:
        teacher, teacher_spec = _teacher_model(cfg, teacher_spec, datamodule, num_labels, "teacher")
    # The teacher's outputs from disk (found, or built once for every run that shares them).
    cache = prepare_teacher_cache(cfg, teacher, teacher_spec.name_or_path, datamodule) if teacher is not None else None
    layer_choice = None
    if student_spec.layer_choice == "block_influence":  # depth pruning: the layers the data says matter
        student_spec, layer_choice = choose_student_layers(
            student_spec, teacher, datamodule, num_labels, cfg.task, int(cfg.data.batch_size))
    L.seed_everything(int(cfg.seed), workers=True)
    student, _ = build_model(
        student_spec, num_labels, task=cfg.task, teacher=teacher, label_names=datamodule.label_names
    )
    module = make_module(cfg, student, teacher, loss, num_labels, teacher_cache=cache,
                         tokenizer=student_tokenizer or teacher_tokenizer)
    extras = {"teacher_spec": teacher_spec, "tokenizer": student_tokenizer, "later_losses": later_losses,
              "layer_choice": layer_choice}
    if check_checkpoint:
        refuse_foreign_checkpoint(cfg, module)
    return module, datamodule, make_trainer(cfg), extras


def _build_ensemble_run(cfg: DictConfig, student_spec: ModelSpec | None, config_problems: list[str]):
    """:func:`build_run` with several teachers (``teachers``, ``teacher_ensemble``; the design is
    :class:`distill.module.TeacherEnsemble`). Each teacher is checked against the student (vocab,
    tokenizer, and in ``per_teacher`` mode its own loss bound to it, problems under
    ``teachers.<name>``), fine-tuned through the cache when it asks, built and frozen. A student made
    of teacher layers copies the primary teacher (else the first listed)."""
    if config_problems:  # the teachers' model pairs need sound specs; the data is still read and checked
        prepared_data(cfg, ensemble_tokenizer(cfg, student_spec, config_problems), config_problems)
    loss = instantiate(cfg.loss)
    problems, specs = check_teachers(cfg, loss)
    mode = cfg.teacher_ensemble.get("mode", "average")
    primary = cfg.teacher_ensemble.get("primary")
    source_name = primary or next(iter(specs))
    tokenizers = {name: load_tokenizer(spec) for name, spec in specs.items()}
    if student_spec.init_from_teacher_layers is not None and not student_spec.init_source:
        student_tokenizer = tokenizers[source_name]
    else:
        student_tokenizer = load_tokenizer(student_spec, fallback=tokenizers[source_name])
    num_labels = run_num_labels(cfg)
    teacher_losses = (
        {name: instantiate(cfg.teachers[name].loss) for name in specs} if mode == "per_teacher" else None
    )
    problems = []
    for name, spec in specs.items():
        if mode == "per_teacher":
            pair_loss = teacher_losses[name]
        else:  # the run's loss reads the combined teacher: bound once, to the primary (or first) teacher
            pair_loss = loss if name == (primary or next(iter(specs))) else None
        found = check_model_pair(
            spec, student_spec, num_labels, pair_loss, tokenizers[name], student_tokenizer,
            task=cfg.task, layer_source=specs[source_name], loss_field=f"teachers.{name}.loss",
        )
        problems.extend(p if p.startswith("teachers.") else f"teachers.{name}: {p}" for p in found)
    datamodule = prepared_data(cfg, student_tokenizer, problems)

    # One seed before the teachers (config-built ones are the same on every rank, and differ from
    # each other), one before the student, as with one teacher.
    L.seed_everything(int(cfg.seed), workers=True)
    teachers, built_specs = {}, {}
    for name, spec in specs.items():
        teachers[name], built_specs[name] = _teacher_model(cfg, spec, datamodule, num_labels, f"teachers.{name}.model")
    L.seed_everything(int(cfg.seed), workers=True)
    student, _ = build_model(
        student_spec, num_labels, task=cfg.task, teacher=teachers[source_name], label_names=datamodule.label_names
    )
    ensemble = TeacherEnsemble(
        teachers=teachers,
        weights={name: float(cfg.teachers[name].get("weight", 1.0)) for name in specs},
        mode=mode,
        losses=teacher_losses,
        primary=primary,
    )
    module = make_module(cfg, student, None, loss, num_labels, ensemble=ensemble)
    extras = {"teacher_specs": built_specs, "tokenizer": student_tokenizer, "later_losses": []}
    refuse_foreign_checkpoint(cfg, module)
    return module, datamodule, make_trainer(cfg), extras


def compress_student(trainer: L.Trainer, module: DistillationModule) -> dict[str, Any] | None:
    """Apply the run's ``compress`` callbacks to the trained student (convert fake-quant to integer
    weights, or quantize post-training); what they did, for ``metrics.json``."""
    callbacks = sorted((c for c in trainer.callbacks if isinstance(c, StudentCompression)), key=lambda c: c.order)
    done = [callback.compress_student(module, trainer) for callback in callbacks]
    if len(done) > 1:
        return {"steps": done}
    return done[0] if done else None


def cache_teacher(cfg: DictConfig) -> dict[str, Any]:
    """``stage=cache_teacher``: check the run, build (or find) its teacher cache, train nothing.
    Returns what the run's ``metrics.json`` would record of the cache."""
    module, _, _, _ = build_run(stage_configs(cfg)[0][1], check_checkpoint=False)
    summary = cache_summary(module.teacher_cache)
    log.info("teacher cache ready: %s (%.1f MiB); runs read it with teacher_cache.path=%s or teacher_cache.enabled=true",
             summary["path"], summary["bytes"] / 2**20, summary["path"])
    return summary


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one distillation (or fine-tuning) job and return its ``metrics.json`` content."""
    stages = stage_configs(cfg)
    ckpt_path = cfg.get("ckpt_path")
    start = resumed_stage(stages, ckpt_path)
    _, first = stages[0]
    module, datamodule, trainer, extras = build_run(
        first, [stage for _, stage in stages[1:]], check_checkpoint=len(stages) == 1,
        known_problems=stage_problems(cfg),
    )
    losses = [module.loss, *extras["later_losses"]]
    examples_seen: list[dict | None] = []
    for index, ((name, stage), loss) in enumerate(zip(stages, losses)):
        if index < start:  # finished before the checkpoint was written
            examples_seen.append(None)
            continue
        if index > 0:  # the next stage continues from this one's student (and reuses the frozen teacher)
            module = make_module(
                stage, module.student, module.teacher, loss, run_num_labels(cfg), teacher_cache=module.teacher_cache
            )
            trainer = make_trainer(stage)
        module.stage = name
        resume = ckpt_path if index == start else None
        if resume and len(stages) > 1:
            refuse_foreign_checkpoint(stage, module)
        log.info("objective%s: %s", f" ({name})" if name else "", module.formula())
        _fit(trainer, module, datamodule, name, ckpt_path=resume)
        examples_seen.append(module.examples_seen)
    compression = compress_student(trainer, module)
    summary = evaluate_models(module, datamodule, trainer, cfg)  # the student as it is exported
    summary["student"]["nonzero_params"] = count_nonzero_parameters(module.student)  # what pruning leaves
    if compression:
        summary["student"]["compression"] = compression
    if extras.get("layer_choice"):
        summary["student"]["layer_choice"] = extras["layer_choice"]
    if module.teacher_cache is not None:
        summary["teacher_cache"] = cache_summary(module.teacher_cache)
    timer = next((c for c in trainer.callbacks if isinstance(c, StepTimes)), None)
    if timer is not None:  # the last stage's fit
        summary["timing"] = timer.summary()
    # Training examples each term saw (this rank), per stage: label terms skip transfer text.
    summary["examples_seen"] = examples_seen[0] if len(examples_seen) == 1 else examples_seen
    if len(stages) > 1:
        summary["stages"] = [name for name, _ in stages]
    output_dir = Path(cfg.paths.output_dir)
    _write_outputs(summary, module, extras["tokenizer"], output_dir, cfg)
    log_saved_paths(output_dir, summary, trainer.checkpoint_callback)  # the last stage's checkpoint
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):  # close the run, or the next run of a sweep appends to it
            logger.experiment.finish()
    return summary


@rank_zero_only
def _write_outputs(summary: dict, module: DistillationModule, tokenizer, output_dir: Path, cfg) -> None:
    summary["objective"] = module.formula()
    summary["output_dir"] = str(output_dir)
    if cfg.report.save_student:
        folder = save_student(
            module.student, tokenizer, output_dir / "student", quantization=summary["student"].get("compression")
        )
        summary["student"]["path"] = str(folder)
        summary["student"]["size_mib"] = size_on_disk(folder) / 2**20
    write_json_atomic(output_dir / "metrics.json", summary)
    if summary.get("samples"):  # causal LM: greedy continuations, teacher beside student
        write_atomic(output_dir / "samples.md", samples_markdown(summary["samples"]))
    render_table(summary)
    render_language_model(summary)


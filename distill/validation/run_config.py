"""Problems found from a run's config alone: no file reads beyond configs, no weights."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from distill.checkpoints import resume_problems
from distill.metrics import metric_problem
from distill.models import ModelSpec
from distill.nonfinite import policy_problems
from distill.validation.compress import compress_callbacks
from distill.teacher_cache.run import teacher_cache_problems
from distill.validation.plain_nodes import plain_node_problems
from distill.validation.specs import model_spec, run_num_labels
from distill.validation.targets import broken, target_problems
from distill.validation.task import task_problems
from distill.validation.teachers import check_teachers


def check_run_config(cfg: DictConfig) -> tuple[list[str], ModelSpec | None, ModelSpec | None]:
    """Problems found from the config alone (no file reads beyond configs, no weights).

    Returns the problems and the instantiated teacher and student specs (``None`` for a group that
    is absent or cannot be built). A node with a target problem (unknown key, unimportable target)
    is not built, so its problem is reported once, not again as a ``TypeError``; the other checks
    still run, so every problem is reported in one pass.
    """
    by_node = target_problems(cfg)
    problems = [problem for found in by_node.values() for problem in found]
    problems.extend(plain_node_problems(cfg))
    compress_callbacks(cfg, problems, skip=set(by_node))
    teacher = None if broken("teacher", by_node) else model_spec(cfg, "teacher", problems)
    student = None if broken("student", by_node) else model_spec(cfg, "student", problems)
    no_teacher = not cfg.get("teacher")  # teacher=none (not a teacher that cannot be built)
    classification = cfg.task == "sequence_classification"
    num_labels = run_num_labels(cfg)
    if classification and cfg.data.get("num_labels") is not None and num_labels < 1:
        problems.append(f"data.num_labels={num_labels}: must be >= 1 (1 = regression)")

    loss = None
    temperature = cfg.loss.get("temperature", 1.0)
    if not isinstance(temperature, (int, float)) or temperature <= 0:
        problems.append(
            f"loss.temperature={temperature}: must be a number > 0 (typical: 1, 2, 4, 8); "
            "it divides the logits before the softmax"
        )
    elif not broken("loss", by_node):
        try:
            loss = instantiate(cfg.loss)
        except Exception as error:  # noqa: BLE001
            problems.append(f"loss: cannot be built: {error}")
    problems.extend(task_problems(cfg, loss, teacher))
    problems.extend(teacher_cache_problems(cfg, loss))
    several = cfg.get("teachers") is not None
    if several and not broken("teachers", by_node):
        problems.extend(check_teachers(cfg, loss)[0])
    if loss is not None:
        teacher_terms = [name for name, term in loss.terms.items() if term.uses_teacher]
        if no_teacher and teacher_terms and not several:
            problems.append(
                f"teacher is none but loss terms {teacher_terms} need a teacher; use loss=ce (or "
                "loss=regression) to fine-tune without a teacher, or choose a teacher"
            )
        class_terms = [name for name, term in loss.terms.items() if term.uses_class_logits]
        if classification and num_labels == 1 and class_terms:
            problems.append(
                f"data.num_labels=1 (regression) but loss terms {class_terms} need class logits; "
                "use loss=regression (MSE to the labels + MSE to the teacher's predictions)"
            )
        regression_terms = [name for name, term in loss.terms.items() if term.uses_regression_head]
        if classification and num_labels > 1 and regression_terms:
            problems.append(
                f"loss terms {regression_terms} need a regression head (data.num_labels=1) but "
                f"data.num_labels={num_labels}; use loss=kd_ce (or loss=ce) for classification"
            )
    metric_error = metric_problem(list(cfg.module.metrics), num_labels) if classification else None
    if metric_error:
        problems.append(metric_error)
    problems.extend(policy_problems(cfg.module.get("nonfinite", "stop"), cfg.module.get("max_skipped_batches", 0)))
    if (
        student is not None
        and student.init_from_teacher_layers is not None
        and no_teacher
        and not several
        and not student.init_source
    ):
        problems.append(
            "student.init_from_teacher_layers needs a teacher to copy from (teacher is none); "
            "set student.init_source to a model name/path, or student.name_or_path instead"
        )
    problems.extend(_output_dir_problems(cfg))
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is not None and not os.path.isfile(str(ckpt_path)):
        problems.append(f"ckpt_path={ckpt_path!r}: no such checkpoint file (tried {os.path.abspath(str(ckpt_path))})")
    elif ckpt_path is not None:
        problems.extend(resume_problems(str(ckpt_path)))
    return problems, teacher, student


def _output_dir_problems(cfg: DictConfig) -> list[str]:
    """The run folder must be a folder this process can create and write (checked before training,
    so a run does not fail at its first checkpoint or at the end, when it saves the student)."""
    output_dir = OmegaConf.select(cfg, "paths.output_dir", throw_on_resolution_failure=False)
    if not output_dir:
        return []
    path = Path(os.path.abspath(os.path.expanduser(str(output_dir))))
    existing = next(parent for parent in (path, *path.parents) if parent.exists())
    if not existing.is_dir():
        return [
            f"paths.output_dir={str(output_dir)!r}: {existing} is a file, not a folder, so the run folder cannot "
            "be created. Fix: point paths.output_dir (or hydra.run.dir) at a folder path."
        ]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [
            f"paths.output_dir={str(output_dir)!r}: {existing} is not writable by this user. Fix: point "
            "paths.output_dir (or hydra.run.dir, DISTILL_LOG_DIR) at a folder you can write."
        ]
    return []

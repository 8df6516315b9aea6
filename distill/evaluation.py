"""After training: the dev metrics of student and teacher(s), their sizes and CPU latency, compared."""

from __future__ import annotations

from typing import Any

import lightning as L
from omegaconf import DictConfig

from distill.models import count_parameters
from distill.module import DistillationModule
from distill.latency import interleaved_latency
from distill.report import compare
from distill.val_metrics import TOKEN_CE_METRICS, agreement_score

#: The report's headline figure for tasks without class predictions (masked_lm, feature_extraction):
#: the run's objective on the eval text (``val/loss/total``; lower is better).
EVAL_LOSS = "eval_loss"


def evaluate_models(module: DistillationModule, datamodule, trainer: L.Trainer, cfg: DictConfig) -> dict:
    """Dev metrics of student (and teacher), parameters and CPU latency per batch.

    Classification: ``student["agreement"]`` is the share of dev examples where the student predicts
    the class of its reference, the teacher (or the ensemble: ``val/agreement/teacher`` or
    ``/ensemble``); runs before the rename wrote it as ``teacher_agreement``.

    Without class predictions (``task`` masked_lm or feature_extraction) the student's figure is
    ``eval_loss`` (the objective on the eval text, each term also under ``eval_terms``) and, for
    masked_lm, both models' ``mlm_ce`` (cross-entropy on the masked eval tokens).
    """
    results = trainer.validate(module, datamodule=datamodule, verbose=False)
    scores = results[0] if results else {}  # empty when trainer.limit_val_batches=0
    if module.task == "causal_lm":
        return _evaluate_causal_lm(module, datamodule, scores, cfg)
    if not module.classification:
        return _evaluate_without_classes(module, datamodule, scores, cfg)
    metric_names = list(cfg.module.metrics)
    timings = _latencies(module, _latency_inputs(module, datamodule, cfg), cfg)

    def figures(model, prefix: str) -> dict[str, Any]:
        result = {
            name: float(scores[f"{prefix}{name}"]) if f"{prefix}{name}" in scores else None
            for name in metric_names
        }
        result["params"] = count_parameters(model)
        result.update(timings.get(id(model), {}))
        return result

    if module.ensemble is not None:
        return _ensemble_summary(module, scores, figures, metric_names)
    teacher = figures(module.teacher, "val/teacher/") if module.teacher is not None else None
    student = figures(module.student, "val/")
    if teacher is not None and agreement_score(scores) is not None:
        student["agreement"] = agreement_score(scores)
    return compare(teacher, student, metric_names[0])


def _ensemble_summary(module: DistillationModule, scores: dict, figures, metric_names: list[str]) -> dict:
    """Several teachers: ``teachers`` holds each teacher's figures; ``teacher`` is the ensemble, the
    reference for retention, speed-up and compression (its metrics from ``val/ensemble/``, its
    parameters and latency the sum over its members, which all run), ``members`` its teachers."""
    teachers = {name: figures(model, f"val/teacher/{name}/") for name, model in module.teachers.items()}
    ensemble: dict[str, Any] = {
        name: float(scores[f"val/ensemble/{name}"]) if f"val/ensemble/{name}" in scores else None
        for name in metric_names
    }
    ensemble["params"] = sum(entry["params"] for entry in teachers.values())
    if all(entry.get("latency_ms") for entry in teachers.values()):
        ensemble["latency_ms"] = sum(entry["latency_ms"] for entry in teachers.values())
    ensemble["members"] = {name: module.ensemble.weights[name] for name in teachers}
    ensemble["mode"] = module.ensemble.mode
    student = figures(module.student, "val/")
    if agreement_score(scores) is not None:
        student["agreement"] = agreement_score(scores)
    summary = compare(ensemble, student, metric_names[0])
    summary["teachers"] = teachers
    return summary


def _latencies(module: DistillationModule, inputs: dict, cfg: DictConfig) -> dict[int, dict[str, Any]]:
    """Every model of the run (teachers and student) timed in interleaved rounds on the CPU
    (:func:`distill.latency.interleaved_latency`): ``latency_ms`` (the median), ``latency_iqr_ms``
    and ``latency_threads``, keyed by ``id(model)``. Empty with ``report.latency_repeats=0``."""
    if not cfg.report.latency_repeats:
        return {}
    models = {"student": module.student}
    if module.teacher is not None:
        models["teacher"] = module.teacher
    models.update({f"teacher {name}": teacher for name, teacher in module.teachers.items()})
    measured = interleaved_latency(
        {name: model.to("cpu") for name, model in models.items()}, inputs, rounds=int(cfg.report.latency_repeats)
    )
    return {
        id(models[name]): {
            "latency_ms": figures["median_ms"],
            "latency_iqr_ms": figures["iqr_ms"],
            "latency_threads": figures["threads"],
        }
        for name, figures in measured.items()
    }


def _latency_inputs(module: DistillationModule, datamodule, cfg: DictConfig) -> dict:
    batch = next(iter(datamodule.val_dataloader()))
    size = int(cfg.report.latency_batch_size)
    return module.model_inputs({key: value[:size] for key, value in batch.items()})


def _evaluate_without_classes(module: DistillationModule, datamodule, scores: dict, cfg: DictConfig) -> dict:
    timings = _latencies(module, _latency_inputs(module, datamodule, cfg), cfg)

    def figures(model, prefix: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name in TOKEN_CE_METRICS.values():
            if f"{prefix}{name}" in scores:
                result[name] = float(scores[f"{prefix}{name}"])
        result["params"] = count_parameters(model)
        result.update(timings.get(id(model), {}))
        return result

    student = figures(module.student, "val/")
    student[EVAL_LOSS] = float(scores["val/loss/total"]) if "val/loss/total" in scores else None
    student["eval_terms"] = {
        key.removeprefix("val/loss/"): float(value)
        for key, value in scores.items()
        if key.startswith("val/loss/") and key != "val/loss/total"
    }
    # The teacher has no distillation loss of its own; for masked_lm its mlm_ce is the reference.
    teacher = figures(module.teacher, "val/teacher/") if module.teacher is not None else None
    summary = compare(teacher, student, EVAL_LOSS)
    if module.ensemble is not None:
        summary["teachers"] = {
            name: figures(model, f"val/teacher/{name}/") for name, model in module.teachers.items()
        }
    return summary


def _evaluate_causal_lm(module: DistillationModule, datamodule, scores: dict, cfg: DictConfig) -> dict:
    """A causal LM's figures beyond perplexity (:mod:`distill.lm_evaluation`): both models' perplexity
    on the eval text, the student's top-1 agreement with the teacher and accuracy, overall and on the
    rarest / most frequent decile of target tokens (by training-text frequency), and greedy samples
    of ``report.sample_prompts``. The headline metric is the student's ``perplexity`` (lower is
    better: ``perplexity_ratio`` = student / teacher replaces the retention)."""
    from distill.lm_evaluation import evaluate_causal_lm, greedy_samples

    summary = _evaluate_without_classes(module, datamodule, scores, cfg)
    evaluation = evaluate_causal_lm(
        module.student, module.teacher, datamodule.val_dataloader(), datamodule.token_counts,
        vocab_size=module.vocab_size,
    ).as_dict()
    summary["metric"] = "perplexity"
    summary["student"]["perplexity"] = evaluation["student_perplexity"]
    if summary.get("teacher") is not None:
        summary["teacher"]["perplexity"] = evaluation["teacher_perplexity"]
        summary["perplexity_ratio"] = evaluation["student_perplexity"] / evaluation["teacher_perplexity"]
        summary.pop("retention", None)
    summary["language_model"] = evaluation
    prompts = list(cfg.report.get("sample_prompts") or [])
    if prompts:
        models = {"teacher": module.teacher} if module.teacher is not None else {}
        models["student"] = module.student
        summary["samples"] = greedy_samples(
            models, datamodule.tokenizer, prompts, int(cfg.report.get("sample_tokens", 24)), vocab_size=module.vocab_size
        )
    return summary

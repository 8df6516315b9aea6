"""What a run's ``task`` rules out: loss terms, data kinds, metrics and fine-tuning."""

from __future__ import annotations

from hydra.utils import get_object
from omegaconf import DictConfig

from distill.models import AUTO_MODEL_BY_TASK, TASK_LOGITS, ModelSpec


def _reads_logits(term) -> bool:
    return bool(term.uses_class_logits or term.uses_regression_head)


def _terms_without_logits() -> list[str]:
    """Class names of the built-in loss terms that read no logits (allowed for feature_extraction)."""
    import distill.losses as losses
    from distill.losses import LossTerm

    return sorted(
        name
        for name in losses.__all__
        if isinstance(getattr(losses, name), type)
        and issubclass(getattr(losses, name), LossTerm)
        and getattr(losses, name) is not LossTerm
        and not _reads_logits(getattr(losses, name))
        and not getattr(losses, name).uses_labels
    )


def task_problems(cfg: DictConfig, loss, teacher: ModelSpec | None) -> list[str]:
    """What ``task`` rules out: logit terms without logits, labels without a class head, and data
    of the wrong kind (a text corpus for classification, labelled examples for masked LM)."""
    problems: list[str] = []
    task = cfg.task
    if task not in AUTO_MODEL_BY_TASK:
        return [f"task={task!r} is not one of {sorted(AUTO_MODEL_BY_TASK)}"]
    data_target = cfg.data.get("_target_")
    try:
        from distill.data.causal import CausalTextDataModule
        from distill.data.mlm import TextCorpusDataModule
        from distill.data.seq2seq import Seq2SeqTextDataModule

        data_class = get_object(data_target) if data_target is not None else None
        is_corpus = data_class is not None and issubclass(data_class, TextCorpusDataModule)
        is_seq2seq = data_class is not None and issubclass(data_class, Seq2SeqTextDataModule)
        is_causal = data_class is not None and issubclass(data_class, CausalTextDataModule) and not is_seq2seq
    except Exception:  # noqa: BLE001 - an unimportable target is reported by check_targets
        is_corpus = is_causal = is_seq2seq = False
    if task == "causal_lm" and not is_causal:
        problems.append(
            f"task=causal_lm reads text from distill.data.CausalTextDataModule (next-token labels, prompt "
            f"masks), but data is {data_target}; use e.g. data=wikitext2_lm or data=tiny_shakespeare"
        )
    elif task != "causal_lm" and is_causal:
        problems.append(
            f"data ({data_target}) makes next-token batches for task=causal_lm, not task={task}; use "
            "data=wikitext_sst2_text (masked LM / hidden states) or a labelled data option"
        )
    if task == "seq2seq_lm" and not is_seq2seq:
        problems.append(
            f"task=seq2seq_lm reads prompt / completion pairs from distill.data.Seq2SeqTextDataModule, but data "
            f"is {data_target}; use e.g. data=generations_seq2seq (a generation stage's folder)"
        )
    elif task != "seq2seq_lm" and is_seq2seq:
        problems.append(f"data ({data_target}) makes encoder-decoder batches for task=seq2seq_lm, not task={task}")
    if task == "sequence_classification":
        if is_corpus:
            problems.append(
                f"task=sequence_classification needs labelled examples, but data ({data_target}) is an "
                "unlabelled text corpus; use task=masked_lm or task=feature_extraction with it, or a "
                "labelled data option (data=sst2 ...)"
            )
        return problems
    if not is_corpus and task not in ("causal_lm", "seq2seq_lm"):
        problems.append(
            f"task={task} reads unlabelled text from distill.data.TextCorpusDataModule, but data is "
            f"{data_target}; use e.g. data=wikitext_sst2_text"
        )
    if teacher is not None and teacher.finetune:
        problems.append(
            f"teacher.finetune={dict(teacher.finetune)} fine-tunes a classification head, which "
            f"task={task} does not use: set teacher.finetune=null (general distillation imitates the "
            "pre-trained model)"
        )
    metrics = list(cfg.module.get("metrics") or [])
    if metrics:
        problems.append(
            f"module.metrics={metrics}: task={task} makes no class predictions; set module.metrics=[] "
            "(the report's figure is then the eval loss, eval_loss)"
        )
    if loss is not None:
        if TASK_LOGITS[task] is None:
            logit_terms = [name for name, term in loss.terms.items() if _reads_logits(term) or term.uses_labels]
            if logit_terms:
                problems.append(
                    f"loss.terms {logit_terms}: task={task} builds a base model with no logits and "
                    f"the text has no labels; allowed terms: {_terms_without_logits()} (e.g. loss=pretrain_hidden)"
                )
        else:
            regression_terms = [name for name, term in loss.terms.items() if term.uses_regression_head]
            if regression_terms:
                problems.append(
                    f"loss.terms {regression_terms} need a regression head; task={task} has token "
                    "logits over the vocabulary: use SoftTargetKL / HardLabelCE (e.g. loss=mlm_triple, "
                    "loss=token_kd for causal_lm)"
                )
            if task == "masked_lm" and is_corpus and not float(cfg.data.get("mlm_probability") or 0) > 0:
                problems.append(
                    f"task=masked_lm needs masked tokens to predict, but data.mlm_probability="
                    f"{cfg.data.get('mlm_probability')}; set it > 0 (DistilBERT: 0.15), or use "
                    "task=feature_extraction for hidden-state-only distillation"
                )
    return problems

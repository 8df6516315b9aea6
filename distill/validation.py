"""One pass over a run's config that finds every problem before any weights load.

Style follows torchtune's config validation: each ``_target_`` node is bound to its callable's
signature, then cross-field facts (loss terms vs teacher, label count vs metrics, layer indices,
hidden widths, vocabularies) are checked. All problems are raised together in one
:class:`ConfigError`, each naming the field, the value, what is allowed and how to fix it.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Iterator

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from distill.checkpoints import resume_problems
from distill.losses import ModelShape
from distill.metrics import metric_problem
from distill.models import AUTO_MODEL_BY_TASK, TASK_LOGITS, ModelSpec, load_model_config

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


class ConfigError(ValueError):
    """Every problem found in a run's config, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the run config:\n{lines}")


def _target_nodes(node, path: str = "") -> Iterator[tuple[str, DictConfig]]:
    if node._is_none() or node._is_missing():
        return
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node.keys():
            child = node._get_node(key)
            if not path and key == "hydra":
                continue
            if isinstance(child, (DictConfig, ListConfig)):
                yield from _target_nodes(child, f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for index, child in enumerate(node):
            if isinstance(child, (DictConfig, ListConfig)):
                yield from _target_nodes(child, f"{path}[{index}]")


def check_targets(cfg: DictConfig) -> list[str]:
    """Each ``_target_`` must import, and each key of its node must be one of its parameters."""
    problems = []
    for path, node in _target_nodes(cfg):
        target = node._get_node("_target_")._value()
        try:
            function = get_object(target)
        except Exception as error:  # noqa: BLE001 - report any import failure as a config problem
            problems.append(f"{path}._target_={target!r} cannot be imported: {error}")
            continue
        try:
            parameters = inspect.signature(function).parameters
        except (TypeError, ValueError):
            continue
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            continue
        for key in node.keys():
            if key in HYDRA_KEYS or key in parameters:
                continue
            close = difflib.get_close_matches(str(key), list(parameters), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(
                f"{path}.{key}: unknown option for {target}{hint} "
                f"(valid: {', '.join(name for name in parameters if name not in ('self', 'args', 'kwargs'))})"
            )
    return problems


def _model_spec(cfg: DictConfig, group: str, problems: list[str]) -> ModelSpec | None:
    node = OmegaConf.select(cfg, group) if "." in group else cfg.get(group)
    if not node:  # null, absent, or the empty `teacher=none` option
        return None
    if "_target_" not in node:
        problems.append(
            f"{group}: fields {sorted(node.keys())} are set but no model is chosen (no _target_); an "
            f"experiment sets {group}.* while {group}=none? Pick a {group} option or drop those fields"
        )
        return None
    try:
        spec = instantiate(node)
    except Exception as error:  # noqa: BLE001
        problems.append(f"{group}: cannot be built: {error}")
        return None
    problems.extend(spec.problems(group))
    return spec


def run_num_labels(cfg: DictConfig) -> int:
    """``data.num_labels`` for ``task: sequence_classification``; 0 for tasks without a class head."""
    if cfg.task != "sequence_classification":
        return 0
    value = cfg.data.get("num_labels")
    return int(value) if value is not None else 0


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


def _task_problems(cfg: DictConfig, loss, teacher: ModelSpec | None) -> list[str]:
    """What ``task`` rules out: logit terms without logits, labels without a class head, and data
    of the wrong kind (a text corpus for classification, labelled examples for masked LM)."""
    problems: list[str] = []
    task = cfg.task
    if task not in AUTO_MODEL_BY_TASK:
        return [f"task={task!r} is not one of {sorted(AUTO_MODEL_BY_TASK)}"]
    data_target = cfg.data.get("_target_")
    try:
        from distill.data.mlm import TextCorpusDataModule

        is_corpus = data_target is not None and issubclass(get_object(data_target), TextCorpusDataModule)
    except Exception:  # noqa: BLE001 - an unimportable target is reported by check_targets
        is_corpus = False
    if task == "sequence_classification":
        if is_corpus:
            problems.append(
                f"task=sequence_classification needs labelled examples, but data ({data_target}) is an "
                "unlabelled text corpus; use task=masked_lm or task=feature_extraction with it, or a "
                "labelled data option (data=sst2 ...)"
            )
        return problems
    if not is_corpus:
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
                    "logits over the vocabulary: use SoftTargetKL / HardLabelCE (e.g. loss=mlm_triple)"
                )
            if is_corpus and not float(cfg.data.get("mlm_probability") or 0) > 0:
                problems.append(
                    f"task=masked_lm needs masked tokens to predict, but data.mlm_probability="
                    f"{cfg.data.get('mlm_probability')}; set it > 0 (DistilBERT: 0.15), or use "
                    "task=feature_extraction for hidden-state-only distillation"
                )
    return problems


#: Keys of one ``teachers.<name>`` entry, and of ``teacher_ensemble``.
TEACHER_ENTRY_KEYS = ("model", "weight", "loss")
ENSEMBLE_KEYS = ("mode", "primary")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_teachers(cfg: DictConfig, loss) -> tuple[list[str], dict[str, ModelSpec]]:
    """Problems of a multi-teacher config (``teachers``, ``teacher_ensemble``) and the teachers'
    specs; ``([], {})`` without ``teachers``. ``loss`` is the run's built loss (or ``None``).

    See :class:`distill.module.TeacherEnsemble` for what the modes mean.
    """
    from distill.losses import LossMix
    from distill.module import ENSEMBLE_MODES

    node = cfg.get("teachers")
    if node is None:
        return [], {}
    problems: list[str] = []
    if not isinstance(node, DictConfig) or not node:
        return [f"teachers={node}: give {{name: {{model: <teacher node>, weight: w}}, ...}} (or null for one teacher)"], {}
    if cfg.get("teacher"):
        problems.append(
            "teacher and teachers are both set: with several teachers set teacher=none (an experiment: "
            "`override /teacher: none`) and give each one under teachers.<name>.model"
        )
    if cfg.get("stages"):
        problems.append("stages with teachers: multi-stage runs take one teacher for now; drop one of them")
    ensemble = cfg.get("teacher_ensemble") or {}
    unknown = sorted(set(ensemble) - set(ENSEMBLE_KEYS))
    if unknown:
        problems.append(f"teacher_ensemble: unknown keys {unknown}; valid: {list(ENSEMBLE_KEYS)}")
    mode = ensemble.get("mode", "average")
    if mode not in ENSEMBLE_MODES:
        problems.append(f"teacher_ensemble.mode={mode!r}: choose one of {list(ENSEMBLE_MODES)}")
    primary = ensemble.get("primary")
    if primary is not None and primary not in node:
        problems.append(f"teacher_ensemble.primary={primary!r}: not one of the teachers {list(node)}")
    specs: dict[str, ModelSpec] = {}
    for name, entry in node.items():
        field = f"teachers.{name}"
        if "/" in str(name) or "." in str(name):
            problems.append(f"{field}: a teacher name must not contain '/' or '.' (it names metrics)")
        if not isinstance(entry, DictConfig) or "model" not in entry:
            problems.append(f"{field}: give {{model: <a teacher/*.yaml node>, weight: w}}")
            continue
        unknown = sorted(set(entry) - set(TEACHER_ENTRY_KEYS))
        if unknown:
            problems.append(f"{field}: unknown keys {unknown}; valid: {list(TEACHER_ENTRY_KEYS)}")
        weight = entry.get("weight", 1.0)
        if not _is_number(weight) or not 0 < weight < float("inf"):
            problems.append(
                f"{field}.weight={weight}: must be a number > 0 (weights are normalised to sum to 1; "
                "drop a teacher to leave it out)"
            )
        spec = _model_spec(cfg, f"{field}.model", problems)
        if spec is None and not any(p.startswith(f"{field}.model") for p in problems):
            problems.append(f"{field}.model is empty: give a teacher node (e.g. `/teacher@{field}.model: minilm_l6`)")
        if spec is not None:
            specs[str(name)] = spec
            if cfg.task != "sequence_classification" and spec.finetune:
                problems.append(
                    f"{field}.model.finetune={dict(spec.finetune)} fine-tunes a classification head, which "
                    f"task={cfg.task} does not use: set it to null"
                )
        teacher_loss = entry.get("loss")
        if mode == "average" and teacher_loss is not None:
            problems.append(
                f"{field}.loss is set but teacher_ensemble.mode=average: the run's loss reads the combined "
                "teacher; set teacher_ensemble.mode=per_teacher, or drop it"
            )
        if mode == "per_teacher":
            if teacher_loss is None:
                problems.append(
                    f"{field}.loss: teacher_ensemble.mode=per_teacher needs each teacher's own loss "
                    f"(a loss/*.yaml node, e.g. `/loss@{field}.loss: kd`)"
                )
                continue
            try:
                mix = instantiate(teacher_loss)
            except Exception as error:  # noqa: BLE001
                problems.append(f"{field}.loss: cannot be built: {error}")
                continue
            if not isinstance(mix, LossMix):
                problems.append(f"{field}.loss must build a distill.losses.LossMix, got {type(mix).__name__}")
                continue
            label_terms = [term_name for term_name, term in mix.terms.items() if term.uses_labels]
            if label_terms:
                problems.append(
                    f"{field}.loss.terms {label_terms} read labels: label terms belong to the run's loss "
                    "(counted once), not to a teacher's"
                )
            if not mix.uses_teacher:
                problems.append(f"{field}.loss has no teacher term: it would not read teacher {name!r}")
    if loss is not None and mode in ENSEMBLE_MODES:
        teacher_terms = [name for name, term in loss.terms.items() if term.uses_teacher]
        if mode == "per_teacher" and teacher_terms:
            problems.append(
                f"loss.terms {teacher_terms} read a teacher, but with teacher_ensemble.mode=per_teacher "
                "each teacher's terms go in teachers.<name>.loss; the run's loss keeps the label terms"
            )
        if mode == "average":
            if not teacher_terms:
                problems.append(
                    "teachers are set but the run's loss has no teacher term (teacher_ensemble.mode=average "
                    "reads the combined teacher through it); use e.g. loss=kd_ce"
                )
            untempered = [
                name for name, term in loss.terms.items()
                if term.uses_teacher and term.uses_class_logits and not term.uses_temperature
            ]
            if untempered:
                problems.append(
                    f"loss.terms {untempered}: with teacher_ensemble.mode=average the teacher logits are the "
                    "log of the teachers' mixed probabilities (times T), not logits to regress on; use "
                    "SoftTargetKL / SoftCrossEntropy, or teacher_ensemble.mode=per_teacher"
                )
            inner = [
                name for name, term in loss.terms.items()
                if term.uses_teacher and (term.uses_hidden_states or term.captures or term.teacher_modules)
            ]
            if inner and primary is None:
                problems.append(
                    f"loss.terms {inner} read teacher hidden states or modules, which an average of "
                    f"teachers does not have: set teacher_ensemble.primary to one of {list(node)} (they "
                    "read that teacher), or use teacher_ensemble.mode=per_teacher"
                )
    return problems, specs


def check_run_config(cfg: DictConfig) -> tuple[list[str], ModelSpec | None, ModelSpec | None]:
    """Problems found from the config alone (no file reads beyond configs, no weights).

    Returns the problems and the instantiated teacher and student specs.
    """
    problems = check_targets(cfg)
    if problems:  # later checks instantiate nodes; unknown keys would only repeat as TypeErrors
        return problems, None, None
    teacher = _model_spec(cfg, "teacher", problems)
    student = _model_spec(cfg, "student", problems)
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
    else:
        try:
            loss = instantiate(cfg.loss)
        except Exception as error:  # noqa: BLE001
            problems.append(f"loss: cannot be built: {error}")
    problems.extend(_task_problems(cfg, loss, teacher))
    several = cfg.get("teachers") is not None
    if several:
        problems.extend(check_teachers(cfg, loss)[0])
    if loss is not None:
        teacher_terms = [name for name, term in loss.terms.items() if term.uses_teacher]
        if teacher is None and teacher_terms and not several:
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
    if (
        student is not None
        and student.init_from_teacher_layers is not None
        and teacher is None
        and not several
        and not student.init_source
    ):
        problems.append(
            "student.init_from_teacher_layers needs a teacher to copy from (teacher is none); "
            "set student.init_source to a model name/path, or student.name_or_path instead"
        )
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is not None and not os.path.isfile(str(ckpt_path)):
        problems.append(f"ckpt_path={ckpt_path!r}: no such checkpoint file (tried {os.path.abspath(str(ckpt_path))})")
    elif ckpt_path is not None:
        problems.extend(resume_problems(str(ckpt_path)))
    return problems, teacher, student


def _meta_module_widths(config, task: str, num_labels: int) -> dict[str, int | None]:
    """The named modules of the model ``config`` builds for ``task`` and their output widths, from a
    model on the ``meta`` device (no memory, no weights)."""
    import copy

    import torch

    from distill.models import module_output_widths

    config = copy.deepcopy(config)
    if task == "sequence_classification" and num_labels > 0:
        config.num_labels = num_labels
    with torch.device("meta"):
        model = AUTO_MODEL_BY_TASK[task].from_config(config)
    return module_output_widths(model)


def _shape(role: str, spec: ModelSpec, config, modules: dict[str, int | None] | None = None) -> ModelShape:
    source = spec.name_or_path or spec.init_source or (spec.config or {}).get("model_type") or "layer copy"
    return ModelShape(
        name=f"{role} {source}",
        num_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        num_heads=config.num_attention_heads,
        modules=modules,
    )


def check_model_pair(
    teacher: ModelSpec | None,
    student: ModelSpec,
    num_labels: int,
    loss,
    teacher_tokenizer,
    student_tokenizer,
    *,
    task: str = "sequence_classification",
    layer_source: ModelSpec | None = None,
    loss_field: str = "loss",
) -> list[str]:
    """Cross-model facts from configs and tokenizers (no weights): layer indices, vocabularies, and
    each loss term bound to the two models (layer maps, widths, projections).

    When a term reads modules by dotted path, both models are built on the ``meta`` device for
    ``task`` to list their modules (``ModelShape.modules``).

    Binding builds the terms' projections, so the same ``loss`` object must then go to the module.
    ``loss=None`` skips binding (another teacher of an ensemble); ``loss_field`` prefixes the bind
    problems (``teachers.<name>.loss``). ``layer_source`` is the teacher whose layers
    ``student.init_from_teacher_layers`` copies when it is not ``teacher`` (several teachers).
    """
    problems: list[str] = []
    teacher_config = load_model_config(teacher, num_labels) if teacher is not None else None
    source_teacher_config = (
        load_model_config(layer_source, num_labels) if layer_source is not None else teacher_config
    )
    if student.init_from_teacher_layers is not None:
        source_spec = layer_source or teacher
        source_name = student.init_source or (source_spec.name_or_path if source_spec else None) or "teacher"
        source_config = (
            load_model_config(ModelSpec(name_or_path=student.init_source), num_labels)
            if student.init_source
            else source_teacher_config
        )
        depth = source_config.num_hidden_layers
        bad = [index for index in student.init_from_teacher_layers if not -depth <= index < depth]
        if bad:
            problems.append(
                f"student.init_from_teacher_layers={student.init_from_teacher_layers}: indices {bad} "
                f"out of range for {source_name}, which has {depth} layers (valid: 0..{depth - 1})"
            )
    student_config = load_model_config(student, num_labels, teacher_config=source_teacher_config)
    student_modules = teacher_modules = None
    if loss is not None and teacher is not None and (loss.student_modules or loss.teacher_modules):
        student_modules = _meta_module_widths(student_config, task, num_labels)
        teacher_modules = _meta_module_widths(teacher_config, task, num_labels)
    if loss is not None:
        problems.extend(
            loss.bind(
                _shape("student", student, student_config, student_modules),
                _shape("teacher", teacher, teacher_config, teacher_modules) if teacher is not None else None,
                field=loss_field,
            )
        )
    if teacher is None:
        return problems
    teacher_vocab = getattr(teacher_config, "vocab_size", None)
    student_vocab = getattr(student_config, "vocab_size", None)
    if teacher_vocab != student_vocab:
        problems.append(
            f"teacher vocab_size={teacher_vocab} != student vocab_size={student_vocab}: the teacher "
            "reads the student's token ids, so both must share one tokenizer and vocabulary"
        )
    elif teacher_tokenizer is not None and student_tokenizer is not None:
        if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
            problems.append(
                "teacher and student tokenizers differ (same size, different token ids): the teacher "
                "reads the student's token ids; set student.tokenizer to the teacher's tokenizer"
            )
    return problems

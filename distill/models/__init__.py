"""Model builders: hub/local/PyPI loading, config-built models, DistilBERT-style layer copies."""

from distill.models.builders import (
    AUTO_MODEL_BY_TASK,
    TASK_LOGITS,
    build_model,
    count_nonzero_parameters,
    count_parameters,
    find_layer_stack,
    load_model_config,
    load_tokenizer,
    student_from_teacher_layers,
)
from distill.models.capture import (
    MODULE_PREFIX,
    PROJECTION_PATHS,
    attention_projections,
    capture_modules,
    capture_outputs,
    find_module,
    module_key,
    module_output_widths,
)
from distill.models.spec import ModelConfigError, ModelSpec, resolve_name_or_path

__all__ = [
    "MODULE_PREFIX",
    "PROJECTION_PATHS",
    "attention_projections",
    "capture_modules",
    "capture_outputs",
    "find_module",
    "module_key",
    "module_output_widths",
    "AUTO_MODEL_BY_TASK",
    "TASK_LOGITS",
    "ModelConfigError",
    "ModelSpec",
    "build_model",
    "count_nonzero_parameters",
    "count_parameters",
    "find_layer_stack",
    "load_model_config",
    "load_tokenizer",
    "resolve_name_or_path",
    "student_from_teacher_layers",
]

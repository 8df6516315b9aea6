"""One pass over a run's config that finds every problem before any weights load.

Style follows torchtune's config validation: each ``_target_`` node is bound to its callable's
signature (:mod:`~distill.validation.targets`), then cross-field facts are checked: loss terms
against the teacher and the task (:mod:`~distill.validation.run_config`,
:mod:`~distill.validation.task`, :mod:`~distill.validation.teachers`), then what the model configs
and tokenizers say (layer indices, hidden widths, vocabularies: :mod:`~distill.validation.model_pair`).
:func:`distill.train.build_run` adds the data's own checks (files, columns, labels) and raises all of
it in one :class:`ConfigError`, each problem naming the field, the value, what is allowed and the fix.
"""

from distill.errors import ConfigError
from distill.validation.model_pair import check_model_pair
from distill.validation.run_config import check_run_config
from distill.validation.specs import run_num_labels
from distill.validation.targets import check_targets, target_problems
from distill.validation.teachers import check_teachers

__all__ = [
    "ConfigError",
    "check_model_pair",
    "check_run_config",
    "check_targets",
    "check_teachers",
    "run_num_labels",
    "target_problems",
]

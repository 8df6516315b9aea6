"""Quiet by default: the console shows what a run tells about itself, not its dependencies' chatter.

:func:`quiet_expected_messages` filters messages every run produces and no user can act on:

- transformers' LOAD REPORT listing missing/unexpected weights: the task head of a base model is
  freshly initialised on purpose (a student or a teacher about to be fine-tuned), and
  :func:`distill.models.build_model` says so in one line of its own. Reports of mismatched shapes
  or failed conversions are kept.
- transformers' "Writing model shards" progress bar (one per ``save_pretrained``).
- Lightning's tips (``litlogger``, ``litmodels``), printed by every Trainer.
- Lightning's "validation_step but no val_dataloader" (the teacher fine-tune trains without one),
  torchmetrics' memory note on ``SpearmanCorrcoef`` (regression runs).
- What importing torchao logs (transformers imports it whenever it is installed): torch's
  deprecation of ``register_constant()`` on its enums, the cpp extensions skipped on purpose
  (``TORCHAO_FORCE_SKIP_LOADING_SO_FILES=1``, set by the Makefile on CPU) and "no triton" on a CPU.
- Deprecation and future warnings raised from inside dependencies (``DeprecationWarning``,
  ``PendingDeprecationWarning``, ``FutureWarning`` attributed to a module outside ``distill``).

``distill -v ...`` (short for ``hydra.verbose=distill``) or any ``hydra.verbose`` skips the filters.
"""

from __future__ import annotations

import logging
import warnings

#: Loggers whose records are filtered, and the start of each message to drop.
_LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
_LIGHTNING_TIP = "💡 Tip:"
_TRANSFORMERS_LOAD_LOGGER = "transformers.modeling_utils"
#: A LOAD REPORT with these entries is kept: they mean the checkpoint does not fit the model.
_LOAD_REPORT_PROBLEMS = ("MISMATCH", "CONVERSION")
#: Warnings (regex on the message start) expected in runs that are fine: Lightning's for the teacher
#: fine-tune, torchmetrics' for every regression run (its eval set fits in memory many times over).
_EXPECTED_WARNINGS = (
    r"You defined a `validation_step` but have no `val_dataloader`",
    r"Metric `SpearmanCorrcoef` will save all targets and predictions in the buffer",
)
_DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
#: Logged when torchao is imported: logger -> a fragment of each message to drop.
_IMPORT_MESSAGES = {
    "torch.utils._pytree": "register_constant() on Enum subclasses is deprecated",
    "torchao": "Skipping import of cpp extensions due to TORCHAO_FORCE_SKIP_LOADING_SO_FILES=1",
    "torchao.kernel.intmm": "Detected no triton",
}


class _ImportMessage(logging.Filter):
    """Drops the records of one logger that contain ``fragment``."""

    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


class _ExpectedMessages(logging.Filter):
    """Drops the expected records of one dependency logger (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        fresh_weights_report = "LOAD REPORT" in message and not any(word in message for word in _LOAD_REPORT_PROBLEMS)
        return not (message.startswith(_LIGHTNING_TIP) or fresh_weights_report)


def quiet_expected_messages() -> None:
    """Install the filters (idempotent: a sweep calls it once per run in the same process)."""
    from transformers.utils import logging as transformers_logging

    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    loggers.append(transformers_logging.get_logger(_TRANSFORMERS_LOAD_LOGGER))
    for logger in loggers:
        if not any(isinstance(existing, _ExpectedMessages) for existing in logger.filters):
            logger.addFilter(_ExpectedMessages())
    for name, fragment in _IMPORT_MESSAGES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _ImportMessage) for existing in logger.filters):
            logger.addFilter(_ImportMessage(fragment))
    transformers_logging.disable_progress_bar()
    for message in _EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for category in _DEPRECATIONS:
        warnings.filterwarnings("ignore", category=category, module=r"(?!distill\b)")

"""The ``compress`` group: each node built (its own checks name every bad field), and each checked
against the student's layers (from its config, no weights)."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from distill.errors import ConfigError


def compress_callbacks(cfg: DictConfig, problems: list[str], skip: set[str] = frozenset()) -> list:
    """The run's ``compress`` callbacks; a node that cannot be built adds its problems instead.
    ``skip``: names of nodes whose problems are already reported (unknown keys, say)."""
    callbacks = []
    for name, node in (cfg.get("compress") or {}).items():
        if node is None or f"compress.{name}" in skip:
            continue
        if "_target_" not in node:
            problems.append(
                f"compress.{name}: has no _target_; a compress entry is a callback node, e.g. compress=qat_int8 "
                "(the choices: distill --help)"
            )
            continue
        try:
            callbacks.append(instantiate(node))
        except Exception as error:  # noqa: BLE001 - Hydra wraps the node's own ConfigError
            cause = error if isinstance(error, ConfigError) else error.__cause__
            if isinstance(cause, ConfigError):
                problems.extend(p for p in cause.problems if p not in problems)
            else:
                problems.append(f"compress.{name}: cannot be built: {error}")
    return callbacks


def compress_model_problems(callbacks: list, student) -> list[str]:
    """What the ``compress`` callbacks cannot do to ``student`` (a model on the ``meta`` device will
    do): quantization group sizes that do not divide a layer, N:M patterns that do not divide an
    input width, FFN pruning of a model without an FFN pair per layer. Each callback names its own
    (``model_problems``)."""
    return [problem for callback in callbacks for problem in callback.model_problems(student)]

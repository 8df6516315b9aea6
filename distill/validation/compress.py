"""The ``compress`` group: each node built (its own checks name every bad field), and the
quantization schemes checked against the student's layer widths (from its config, no weights)."""

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


def scheme_width_problems(callbacks: list, student) -> list[str]:
    """Group sizes of the ``compress`` callbacks' schemes that do not divide a layer of ``student``
    (a model on the ``meta`` device will do)."""
    from distill.quantization.formats import width_problems

    schemes = [callback.scheme for callback in callbacks if getattr(callback, "scheme", None) is not None]
    return [problem for scheme in schemes for problem in width_problems("compress.quantize", scheme, student)]

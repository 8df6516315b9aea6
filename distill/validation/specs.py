"""Model specs and label counts read from a run config."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from distill.models import ModelSpec


def model_spec(cfg: DictConfig, group: str, problems: list[str]) -> ModelSpec | None:
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


def is_number(value) -> bool:
    """A real number (``True``/``False`` are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)

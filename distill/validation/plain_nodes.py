"""Unknown keys in the run config's plain nodes (``module``, ``report``, ``teacher_cache``, ``generate``:
no ``_target_`` to bind).

Their schema is the node as the root config (``conf/train.yaml``) ships it: an experiment or a
``+module.x=...`` override that adds a key the code never reads (``module.warmup_ratoi``) is refused,
with the closest valid key suggested, instead of being ignored silently.
"""

from __future__ import annotations

import difflib
from functools import cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

ROOT_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "train.yaml"

#: The plain nodes checked here (``teacher_ensemble`` and ``stages`` have checks of their own).
PLAIN_NODES = ("module", "report", "teacher_cache", "generate")


@cache
def _schema(node: str) -> tuple[str, ...]:
    return tuple(OmegaConf.load(ROOT_CONFIG).get(node, {}).keys())


def plain_node_problems(cfg: DictConfig) -> list[str]:
    """One problem per key of a plain node that its schema does not have."""
    problems = []
    for node in PLAIN_NODES:
        allowed = _schema(node)
        value = cfg.get(node)
        if not isinstance(value, DictConfig):
            continue
        for key in value.keys():
            if key in allowed:
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(f"{node}.{key}: unknown key; {hint}(valid: {', '.join(allowed)})")
    return problems

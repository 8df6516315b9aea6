"""OmegaConf resolvers of the distill configs, registered when ``distill`` is imported.

``${distill.sweep_group:}``: in a multirun (``distill -m ...``) job, the sweep folder
(``hydra.sweep.dir``), the same string for every job of the sweep; in a single run, or outside a
Hydra app, null. logger/wandb.yaml uses it as the W&B group.
"""

from __future__ import annotations

from omegaconf import OmegaConf


def sweep_group() -> str | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    if hydra.get("mode") != RunMode.MULTIRUN:
        return None
    return str(hydra.sweep.dir)


def register() -> None:
    if not OmegaConf.has_resolver("distill.sweep_group"):
        OmegaConf.register_new_resolver("distill.sweep_group", sweep_group)

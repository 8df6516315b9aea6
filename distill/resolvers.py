"""OmegaConf resolvers of the distill configs, registered when ``distill`` is imported.

``${distill.sweep_group:}``: in a multirun (``distill -m ...``) job, the sweep folder
(``hydra.sweep.dir``), the same string for every job of the sweep; in a single run, or outside a
Hydra app, null. logger/wandb.yaml uses it as the W&B group.

``${distill.multirun:}``: true in a multirun job, false in a single run or outside a Hydra app.
callbacks/default.yaml uses it for ``model_checkpoint.save_weights_only``: a sweep's checkpoints
hold weights only, a single run's are full (resumable).
"""

from __future__ import annotations

from omegaconf import OmegaConf


def multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().get("mode") == RunMode.MULTIRUN


def sweep_group() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    if not multirun():
        return None
    return str(HydraConfig.get().sweep.dir)


def register() -> None:
    if not OmegaConf.has_resolver("distill.sweep_group"):
        OmegaConf.register_new_resolver("distill.sweep_group", sweep_group)
    if not OmegaConf.has_resolver("distill.multirun"):
        OmegaConf.register_new_resolver("distill.multirun", multirun)

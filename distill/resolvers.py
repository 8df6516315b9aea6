"""OmegaConf resolvers of the distill configs, registered when ``distill`` is imported.

``${distill.sweep_group:}``: in a multirun (``distill -m ...``) job, the sweep folder
(``hydra.sweep.dir``), the same string for every job of the sweep; in a single run, or outside a
Hydra app, null. logger/wandb.yaml uses it as the W&B group.

``${distill.data_file:${paths.data_dir},sst2/train.tsv}``: the file under the data folder, or null
when no data folder is set (``DISTILL_DATA_DIR`` unset). The task configs (data/sst2.yaml ...) name
their local files this way, so without a data folder they read the Hugging Face hub, and with one a
missing file is an error naming the path tried (never a silent switch to the hub).

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


def data_file(data_dir: str | None, relative_path: str) -> str | None:
    if data_dir is None or str(data_dir) == "":
        return None
    return f"{str(data_dir).rstrip('/')}/{relative_path}"


def register() -> None:
    if not OmegaConf.has_resolver("distill.data_file"):
        OmegaConf.register_new_resolver("distill.data_file", data_file)
    if not OmegaConf.has_resolver("distill.sweep_group"):
        OmegaConf.register_new_resolver("distill.sweep_group", sweep_group)
    if not OmegaConf.has_resolver("distill.multirun"):
        OmegaConf.register_new_resolver("distill.multirun", multirun)

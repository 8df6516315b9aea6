"""Multi-stage runs (``stages:`` in the config, e.g. ``experiment=tinybert_task``): one config per
stage, each continuing from the previous stage's student with its own loss, steps and learning rate."""

from __future__ import annotations

from omegaconf import DictConfig, open_dict

#: What a stage may set (see :func:`stage_configs`).
STAGE_KEYS = {"loss", "max_steps", "lr"}



def stage_problems(cfg: DictConfig) -> list[str]:
    """Unknown keys in ``stages.<name>`` (reported with every other problem by :func:`build_run`)."""
    return [
        f"stages.{name}: unknown keys {unknown}; a stage takes {sorted(STAGE_KEYS)}"
        for name, spec in (cfg.get("stages") or {}).items()
        if (unknown := sorted(set(spec or {}) - STAGE_KEYS))
    ]


def stage_configs(cfg: DictConfig) -> list[tuple[str | None, DictConfig]]:
    """The run's stages: ``[(None, cfg)]``, or one config per entry of ``cfg.stages`` (unknown keys
    are left out here; :func:`stage_problems` reports them).

    ``stages`` maps a stage name to ``{loss: <loss node> (default: the run's loss), max_steps,
    lr}``. Stages run in order on the same student (and teacher); each writes its checkpoints to
    ``checkpoints/<name>/`` and its CSV/TensorBoard logs under version ``<name>``.
    """
    if not cfg.get("stages"):
        return [(None, cfg)]
    stages = []
    for name, spec in cfg.stages.items():
        stage = cfg.copy()
        with open_dict(stage):
            del stage["stages"]
            if spec.get("loss") is not None:
                stage.loss = spec.loss
            if spec.get("max_steps") is not None:
                stage.trainer.max_steps = spec.max_steps
            if spec.get("lr") is not None:
                stage.optimizer.lr = spec.lr
            checkpoint = stage.get("callbacks", {}).get("model_checkpoint")
            if checkpoint:
                checkpoint.dirpath = f"{cfg.paths.output_dir}/checkpoints/{name}"
            for logger in (stage.get("logger") or {}).values():
                if logger is not None and "version" in logger:
                    logger.version = str(name)
        stages.append((str(name), stage))
    return stages

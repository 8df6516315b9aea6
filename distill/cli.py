"""The ``distill`` command: one Hydra app (``distill ...`` and ``python -m distill ...``).

    distill experiment=quickstart                    # one run
    distill -m loss.temperature=1,2,4,8              # a sweep, one output folder per run
    distill --help                                   # config groups and options
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

log = logging.getLogger("distill")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: runs :func:`distill.train.train` and returns the headline metric (for sweepers)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from distill.train import train  # heavy imports after Hydra has parsed the command line

    # Hydra's logging config already prints every record (and writes it to the run's log file);
    # Lightning's own console handlers would print each of its messages a second time.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True

    try:
        summary = train(cfg)
    except ValueError as error:
        # Config, data and model errors are found before training; show the message, not a traceback.
        if type(error).__name__ not in ("ConfigError", "DataConfigError", "ModelConfigError"):
            raise
        log.error("%s", error)
        from distill.run_folder import remove_refused_run_folder

        remove_refused_run_folder(cfg.paths.get("log_dir"))
        sys.exit(2)
    return summary["student"].get(summary["metric"])


if __name__ == "__main__":
    main()

"""The ``distill`` command: one Hydra app (``distill ...`` and ``python -m distill ...``).

    distill experiment=quickstart                    # one run
    distill -m loss.temperature=1,2,4,8              # a sweep, one output folder per run
    distill --help                                   # config groups and options
    distill -v ...                                   # verbose: hydra.verbose=distill, dependencies' messages unfiltered
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

log = logging.getLogger("distill")

#: ``distill -v ...`` / ``--verbose`` stands for this override (Hydra's parser knows no ``-v``).
VERBOSE_FLAGS = ("-v", "--verbose")
VERBOSE_OVERRIDE = "hydra.verbose=distill"


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def run(cfg: DictConfig) -> float | None:
    """Hydra entry point: runs :func:`distill.train.train` and returns the headline metric (for sweepers)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not HydraConfig.get().verbose:
        from distill.quiet import quiet_expected_messages

        quiet_expected_messages()
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
        sys.exit(2)
    return summary["student"].get(summary["metric"])


def main() -> None:
    """The ``distill`` command: :func:`run`, with ``-v``/``--verbose`` turned into ``hydra.verbose=distill``."""
    args = sys.argv[1:]
    if any(arg in VERBOSE_FLAGS for arg in args):
        args = [arg for arg in args if arg not in VERBOSE_FLAGS]
        if not any(arg.startswith("hydra.verbose=") for arg in args):
            args.append(VERBOSE_OVERRIDE)
        sys.argv = [sys.argv[0], *args]
    run()


if __name__ == "__main__":
    main()

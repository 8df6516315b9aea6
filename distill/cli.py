"""The ``distill`` command: one Hydra app (``distill ...`` and ``python -m distill ...``).

    distill experiment=quickstart                    # one run
    distill -m loss.temperature=1,2,4,8              # a sweep, one output folder per run
    distill --help                                   # config groups and options
    distill -v ...                                   # verbose: hydra.verbose=distill, dependencies' messages unfiltered
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
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
    from distill.teacher_cache.run import cache_stage
    from distill.train import cache_teacher, train  # heavy imports after Hydra has parsed the command line

    # Hydra's logging config already prints every record (and writes it to the run's log file);
    # Lightning's own console handlers would print each of its messages a second time.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from distill.errors import PREEMPTED_EXIT, ConfigError, NonFiniteLossError, Preempted

    resolve_ckpt_path(cfg)
    try:
        if cache_stage(cfg):  # build the teacher cache, train nothing
            cache_teacher(cfg)
            return None
        if cfg.get("stage") == "generate":  # the teacher's generations for sequence-level KD
            from distill.generation.run import generate_stage

            generate_stage(cfg)
            return None
        summary = train(cfg)
    except Preempted as error:
        log.error("%s\n%s", error, _resume_advice(error.stage, error.checkpoint))
        sys.exit(PREEMPTED_EXIT)
    except SIGTERMException:  # a signal during the evaluation after training (the checkpoint is complete)
        log.error("stopped by a termination signal after training, before the run's outputs were written\n%s",
                  _resume_advice(None))
        sys.exit(PREEMPTED_EXIT)
    except NonFiniteLossError as error:
        # A training-time failure: the message names the step and the terms; the run folder (logs,
        # the last good checkpoint) stays.
        log.error("%s", error)
        sys.exit(3)
    except ConfigError as error:
        # Config, data and model errors are found before training; show the message, not a traceback.
        log.error("%s", error)
        from distill.run_folder import remove_refused_run_folder

        remove_refused_run_folder(cfg.paths.get("log_dir"))
        sys.exit(2)
    return summary["student"].get(summary["metric"])


def resolve_ckpt_path(cfg: DictConfig) -> None:
    """Replace ``ckpt_path=auto`` / ``ckpt_path=<run folder>`` with the file it stands for (see
    :mod:`distill.resume`), before validation checks the file. ``auto`` searches
    ``<paths.log_dir>/runs/`` (``multiruns/`` for a sweep job) for this command's earlier runs."""
    if cfg.get("ckpt_path") is None:
        return
    from distill.resume import resolve_ckpt_path as resolve

    hydra = HydraConfig.get()
    sweep = hydra.mode == RunMode.MULTIRUN
    root = Path(str(cfg.paths.log_dir)) / ("multiruns" if sweep else "runs")
    cfg.ckpt_path = resolve(str(cfg.ckpt_path), root, list(hydra.overrides.task), hydra.runtime.output_dir)


def resume_command(args: list[str], ckpt_path: str = "auto") -> str:
    """The command line that resumes this one: ``args`` with ``ckpt_path`` in place of any ckpt_path."""
    from distill.resume import is_ckpt_override

    kept = [arg for arg in args if not is_ckpt_override(arg)]
    return shlex.join(["distill", *kept, f"ckpt_path={ckpt_path}"])


def _resume_advice(stage: str | None, checkpoint: str | None) -> str:
    if stage is not None and checkpoint:  # a stage's checkpoint lives in checkpoints/<stage>/, which auto does not read
        return (f"Resume it in stage {stage!r}, then the later stages run (same overrides): "
                + resume_command(sys.argv[1:], ckpt_path=checkpoint))
    return "Resume it (same overrides; output goes to a new run folder): " + resume_command(sys.argv[1:])


def verbose_argv(args: list[str]) -> list[str]:
    """``args`` with ``-v``/``--verbose`` replaced by ``hydra.verbose=distill`` (unless one is given).

    Hydra's parser takes the overrides as one run of positional arguments, so the override goes
    just before the first one (or first of all when there is none: ``distill -v --cfg job``).
    """
    if not any(arg in VERBOSE_FLAGS for arg in args):
        return args
    args = [arg for arg in args if arg not in VERBOSE_FLAGS]
    if any(arg.startswith("hydra.verbose=") for arg in args):
        return args
    overrides = [index for index, arg in enumerate(args) if "=" in arg and not arg.startswith("-")]
    position = overrides[0] if overrides else 0
    return [*args[:position], VERBOSE_OVERRIDE, *args[position:]]


def main() -> None:
    """The ``distill`` command: :func:`run`, with ``-v``/``--verbose`` turned into ``hydra.verbose=distill``."""
    sys.argv = [sys.argv[0], *verbose_argv(sys.argv[1:])]
    run()


if __name__ == "__main__":
    main()

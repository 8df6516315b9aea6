"""A run's folder: what the end of a run says it saved there, and no folder for a refused run.

:func:`log_saved_paths` ends every run with the paths of its folder, student, metrics.json and
last checkpoint, so nobody has to guess them.

Hydra creates the job's folder (its ``.hydra/`` configs and the log file) before the task starts.
When validation then refuses the run, that folder holds no result, yet ``distill-report sweep`` and
anyone listing ``outputs/`` would take it for a run. :func:`remove_refused_run_folder` deletes it,
but only when it holds nothing beyond what Hydra wrote for this job: a folder shared with other
files (``hydra.run.dir`` pointed at an existing folder) is left alone.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


@rank_zero_only
def log_saved_paths(output_dir: Path, summary: dict, checkpoint: ModelCheckpoint | None) -> None:
    """End the run with where it saved: its folder, the student, metrics.json and the last checkpoint.

    The checkpoint's path is the one its callback wrote (``last_model_path``, else the best one), not
    a guess from the config: ``dirpath``, ``filename`` and stages all change it.
    """
    path = (checkpoint.last_model_path or checkpoint.best_model_path) if checkpoint is not None else ""
    if not path:
        saved = "none (no ModelCheckpoint in callbacks, or it saved nothing)"
    elif checkpoint.save_weights_only:
        saved = f"{path} (weights only: not resumable; see callbacks.model_checkpoint.save_weights_only)"
    else:
        saved = f"{path} (full: resumable with ckpt_path)"
    student = summary["student"].get("path") or "not saved (report.save_student=false)"
    log.info(
        "run folder: %s\n  student:    %s\n  metrics:    %s\n  checkpoint: %s",
        output_dir, student, output_dir / "metrics.json", saved,
    )


#: What Hydra writes into ``<run dir>/<hydra.output_subdir>/`` for a job.
HYDRA_FILES = {"config.yaml", "hydra.yaml", "overrides.yaml"}


def _job_log_handlers(folder: Path) -> list[logging.FileHandler]:
    """The file handlers of Hydra's job logging that write into ``folder`` (the job's ``<name>.log``)."""
    handlers = [handler for handler in logging.getLogger().handlers if isinstance(handler, logging.FileHandler)]
    return [handler for handler in handlers if Path(handler.baseFilename).parent == folder]


def _holds_only_hydra_files(folder: Path, output_subdir: str | None, log_names: set[str]) -> bool:
    for entry in folder.iterdir():
        if entry.name in log_names and entry.is_file():
            continue
        hydra_files = output_subdir is not None and entry.name == output_subdir and entry.is_dir()
        if hydra_files and all(inner.name in HYDRA_FILES and inner.is_file() for inner in entry.iterdir()):
            continue
        return False
    return True


def remove_refused_run_folder(log_dir: str | Path | None) -> Path | None:
    """Delete this Hydra job's folder if it holds only its ``.hydra/`` and its log file; returns it.

    Empty parents up to ``log_dir`` (e.g. ``<log_dir>/runs/<date>/``) go too. In a multirun only
    the job's own folder goes: the sweep folder holds ``multirun.yaml`` and the other jobs. Returns
    None when nothing was removed (not a Hydra job, or the folder holds anything else).
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    folder = Path(hydra.runtime.output_dir).resolve()
    if not folder.is_dir():
        return None
    handlers = _job_log_handlers(folder)
    if not _holds_only_hydra_files(folder, hydra.output_subdir, {Path(h.baseFilename).name for h in handlers}):
        return None
    for handler in handlers:  # stop writing into the folder before it goes
        logging.getLogger().removeHandler(handler)
        handler.close()
    shutil.rmtree(folder)
    if log_dir is not None:
        stop = Path(log_dir).resolve()
        parent = folder.parent
        while parent != stop and stop in parent.parents:
            try:
                os.rmdir(parent)  # only when empty: another run's folder keeps it
            except OSError:
                break
            parent = parent.parent
    log.info("removed the run folder %s: the run was refused before it wrote anything", folder)
    return folder

"""``ckpt_path=auto`` and ``ckpt_path=<run folder>``: the checkpoint a rerun resumes from.

``auto`` means: among the run folders under ``search_root`` (``<paths.log_dir>/runs/`` for a run,
``<paths.log_dir>/multiruns/`` for a sweep job), those whose ``.hydra/overrides.yaml`` lists the same
overrides as this run (in any order) apart from ``ckpt_path``, and this run's own folder (a requeued
job may rerun in it), the one whose
``checkpoints/last.ckpt`` is full (resumable: optimizer and scheduler state) and was written last
(file modification time). With none, the run starts fresh and says so, so a job script can always
pass ``ckpt_path=auto``. Weights-only checkpoints (a sweep's default) are skipped, with a log line.

``<run folder>`` (any existing folder) means ``<run folder>/checkpoints/last.ckpt``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import yaml

from distill.checkpoints import read_checkpoint, resume_problems

log = logging.getLogger(__name__)

AUTO = "auto"
#: Where a run folder keeps the checkpoint a resume reads.
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def is_ckpt_override(override: str) -> bool:
    """Whether a command-line override sets or deletes ``ckpt_path`` (``+``/``++``/``~`` forms too)."""
    return override.lstrip("+~").split("=", 1)[0] == "ckpt_path"


def comparable_overrides(overrides: list[str]) -> list[str]:
    """``overrides`` without ``ckpt_path=...`` (also ``+``/``++``/``~`` forms), sorted."""
    return sorted(str(override) for override in overrides if not is_ckpt_override(str(override)))


def find_auto_checkpoint(search_root: str | Path, overrides: list[str], this_run: str | Path | None = None) -> Path | None:
    """The full ``checkpoints/last.ckpt`` of the newest earlier run of these overrides, or None.

    ``this_run`` (this run's own folder) is searched too, wherever it is: a requeued SLURM job with
    ``hydra.run.dir=.../$SLURM_JOB_ID`` reruns in the folder of its first attempt. See the module doc.
    """
    root = Path(search_root)
    files = list(root.rglob(".hydra/overrides.yaml")) if root.is_dir() else []
    if this_run is not None and (Path(this_run) / ".hydra" / "overrides.yaml").is_file():
        files.append(Path(this_run) / ".hydra" / "overrides.yaml")
    wanted = comparable_overrides(overrides)
    candidates = []
    for overrides_file in files:
        folder = overrides_file.parent.parent
        checkpoint = folder / LAST_CHECKPOINT
        if not checkpoint.is_file() or checkpoint in candidates:
            continue
        try:
            saved = yaml.safe_load(overrides_file.read_text()) or []
        except (OSError, yaml.YAMLError):
            continue
        if comparable_overrides(saved) == wanted:
            candidates.append(checkpoint)
    for checkpoint in sorted(candidates, key=lambda path: path.stat().st_mtime, reverse=True):
        problems = resume_problems(str(checkpoint))
        if not problems:
            return checkpoint
        log.info("ckpt_path=auto: skipping %s, it cannot resume: %s", checkpoint, problems[0])
    return None


def checkpoint_step(path: str | Path) -> int | None:
    """The ``global_step`` a Lightning checkpoint holds (memory-mapped: its tensors are not read)."""
    try:
        return int(read_checkpoint(path)["global_step"])
    except Exception:  # noqa: BLE001 - validation reports an unreadable file
        return None


def resolve_ckpt_path(
    value: str | None, search_root: str | Path, overrides: list[str], this_run: str | Path | None = None
) -> str | None:
    """The file ``ckpt_path=value`` stands for: ``auto`` and a folder are resolved (module doc), a file
    path is returned as given; None (start fresh) for ``auto`` with no earlier run to resume."""
    if value is None:
        return None
    value = str(value)
    if value == AUTO:
        found = find_auto_checkpoint(search_root, overrides, this_run=this_run)
        if found is None:
            log.info(
                "ckpt_path=auto: no earlier run with these overrides has a full %s under %s: starting fresh",
                LAST_CHECKPOINT, search_root,
            )
            return None
        log.info("ckpt_path=auto: resuming from %s (step %s)", found, checkpoint_step(found))
        return str(found)
    if os.path.isdir(os.path.expanduser(value)):
        return str(Path(os.path.expanduser(value)) / LAST_CHECKPOINT)
    return value

"""What a resume (``ckpt_path=...``) needs from a Lightning checkpoint, checked before training.

A weights-only checkpoint (``callbacks.model_checkpoint.save_weights_only=true``, the default in a
sweep) has no optimizer or scheduler state: Lightning fails on it with a ``KeyError`` inside
``trainer.fit``, after the data has loaded and the teacher has been fine-tuned. Checking the file's
keys first turns that into a validation problem with the fix named.

:class:`AtomicCheckpointIO` writes every checkpoint whole or not at all: Lightning's own save stages
the file in the system temp folder and moves it into place, a copy (not a rename) when that folder is
on another file system, so a signal or a full disk mid-copy would leave a truncated ``last.ckpt`` in
place of the good one.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from distill.atomic import file_mode

#: The keys Lightning reads to resume training; ``save_weights_only`` drops them.
RESUME_KEYS = ("optimizer_states", "lr_schedulers")
FIX_PATH = "Fix: point ckpt_path at a run's checkpoints/last.ckpt"


def read_checkpoint(path) -> dict[str, Any]:
    """A checkpoint file, memory-mapped: its tensors are not read until used (a 200 MB file costs
    milliseconds to inspect)."""
    return torch.load(path, map_location="cpu", mmap=True, weights_only=False)


def resume_problems(path: str) -> list[str]:
    """Problems that stop ``trainer.fit(ckpt_path=path)`` from resuming; empty when it can.

    The file is memory-mapped, so its tensors are not read: a 200 MB checkpoint costs milliseconds.
    """
    try:
        checkpoint = read_checkpoint(path)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same problem for the user
        return [
            f"ckpt_path={path!r}: not a readable Lightning checkpoint ({type(error).__name__}: {error}). "
            + FIX_PATH
        ]
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        return [f"ckpt_path={path!r}: not a Lightning checkpoint (no state_dict). " + FIX_PATH]
    missing = [key for key in RESUME_KEYS if key not in checkpoint]
    if missing:
        message = (
            f"ckpt_path={path!r} holds weights only (no {', '.join(missing)}): it was saved with "
            "callbacks.model_checkpoint.save_weights_only=true (the default in a sweep, -m), so training "
            "cannot resume from it. Fix: resume from a full checkpoint (a single run's, or a sweep's run "
            "with callbacks.model_checkpoint.save_weights_only=false), or train a new run from the weights "
            "it exported: student=minilm_l6 student.name_or_path=<run dir>/student"
        )
        return [message]
    return []


def checkpoint_keys(path: str) -> list[str]:
    """The names of the module weights a checkpoint holds."""
    return list(read_checkpoint(path).get("state_dict", {}))


def mismatch_problems(
    path: str, module_state: dict[str, torch.Tensor], added_later: Callable[[str], bool] | None = None
) -> list[str]:
    """Problems of resuming ``module_state`` (the module this run built) from the checkpoint at
    ``path``: weights it lacks, weights the module lacks, and weights of another shape. A checkpoint
    of another model would otherwise fail deep inside Lightning's ``load_state_dict``.
    ``added_later``: names of weights the module gains before the checkpoint loads (a callback's
    setup), not counted as foreign."""
    saved = read_checkpoint(path).get("state_dict", {})
    missing = sorted(set(module_state) - set(saved))
    unexpected = sorted(key for key in set(saved) - set(module_state) if added_later is None or not added_later(key))
    reshaped = sorted(
        key for key in set(saved) & set(module_state) if tuple(saved[key].shape) != tuple(module_state[key].shape)
    )
    if not (missing or unexpected or reshaped):
        return []
    details = []
    if reshaped:
        first = reshaped[0]
        details.append(
            f"{len(reshaped)} weights of another shape (e.g. {first}: {tuple(saved[first].shape)} saved, "
            f"{tuple(module_state[first].shape)} here)"
        )
    if missing:
        details.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
    if unexpected:
        details.append(f"{len(unexpected)} weights this run does not have (e.g. {unexpected[0]})")
    return [
        f"ckpt_path={path!r} is a checkpoint of another model: {'; '.join(details)}. Fix: resume with the "
        "teacher, student and loss settings of the run that wrote it (its .hydra/overrides.yaml), or drop "
        "ckpt_path to start a new run."
    ]


def rng_states() -> dict[str, Any]:
    """The global RNG states (torch, CUDA, numpy, Python), as tensors and plain lists.

    Lightning 2.6 saves none of them; dropout draws from torch's, so a resumed run needs them to
    continue to the same weights. Lightning's own ``_collect_rng_states`` keeps numpy's state as
    an ``ndarray``, which ``torch.load(weights_only=True)`` (how Lightning reads ``ckpt_path``)
    refuses; here every part is a tensor or a list of ints.
    """
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "torch.cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(gauss)],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restores what :func:`rng_states` returned (the CUDA part only where there are as many devices)."""
    torch.set_rng_state(states["torch"])
    cuda = states.get("torch.cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))


def checkpoint_stage(path: str) -> str | None:
    """The stage a checkpoint was written in (``stages.<name>``; ``None``: a run without stages)."""
    return read_checkpoint(path).get("stage")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with the file staged beside its target, flushed to disk, then renamed
    over it (``os.replace``, atomic on one file system): a reader sees the old checkpoint or the new
    one, never part of one. The file gets the mode a plain write would (0o666 minus the umask)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, staged = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(staged, file_mode())
            os.replace(staged, path)
        except BaseException:
            Path(staged).unlink(missing_ok=True)
            raise

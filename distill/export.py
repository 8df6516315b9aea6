"""Write a trained student to disk in the form transformers loads, atomically."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from torch import nn

from distill.atomic import apply_umask_modes, staged_folder


def replace_directory(staged: Path, target: Path) -> None:
    """Move a fully written ``staged`` folder to ``target``; an old ``target`` is swapped out.

    Readers see either the old folder or the new one, never a half-written one.
    """
    target = Path(target)
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, backup)
        os.replace(staged, target)
        shutil.rmtree(backup)
    else:
        os.replace(staged, target)


def save_student(model: nn.Module, tokenizer, directory: str | Path) -> Path:
    """``save_pretrained`` the model and its tokenizer into ``directory`` via a temporary folder.

    ``AutoModelFor<Task>.from_pretrained(directory)`` and ``AutoTokenizer.from_pretrained(directory)``
    load the result. The folder and its files get a plain write's modes (0o777 / 0o666 minus the
    umask): the staging folder and safetensors' own temporary file would leave them owner-only,
    unreadable to a serving process under another account.
    """
    directory = Path(directory)
    staged = staged_folder(directory)
    try:
        model.save_pretrained(staged)
        if tokenizer is not None:
            tokenizer.save_pretrained(staged)
        apply_umask_modes(staged)
        replace_directory(staged, directory)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return directory

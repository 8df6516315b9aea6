"""Write a trained student to disk in the form transformers loads, atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from torch import nn


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
    load the result.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    model.save_pretrained(staged)
    if tokenizer is not None:
        tokenizer.save_pretrained(staged)
    replace_directory(staged, directory)
    return directory

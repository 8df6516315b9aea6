"""Write a trained student to disk, atomically, and read it back.

A float student is written with ``save_pretrained`` (``AutoModelFor<Task>.from_pretrained`` loads it);
a quantized one (converted by a ``compress`` callback) as integer codes with their scales
(:mod:`distill.quantization.serialize`), which :func:`load_student` reads. :func:`load_student` reads
both, so code that ships a student needs one call.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from torch import nn

from distill.atomic import apply_umask_modes, staged_folder

#: The files of a saved student that hold its weights (their bytes are its size on disk).
WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin")


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


def save_student(model: nn.Module, tokenizer, directory: str | Path, quantization: dict | None = None) -> Path:
    """``save_pretrained`` the model and its tokenizer into ``directory`` via a temporary folder.

    ``AutoModelFor<Task>.from_pretrained(directory)`` and ``AutoTokenizer.from_pretrained(directory)``
    load the result; a quantized model (integer weights) is written as codes and scales instead
    (``quantization`` describes the scheme in its ``quantization.json``) and loads with
    :func:`load_student`. The folder and its files get a plain write's modes (0o777 / 0o666 minus the
    umask): the staging folder and safetensors' own temporary file would leave them owner-only,
    unreadable to a serving process under another account.
    """
    directory = Path(directory)
    staged = staged_folder(directory)
    try:
        from distill.quantization.serialize import is_quantized, write_quantized

        if is_quantized(model):
            write_quantized(model, staged, quantization)
        else:
            model.save_pretrained(staged)
        if tokenizer is not None:
            tokenizer.save_pretrained(staged)
        apply_umask_modes(staged)
        replace_directory(staged, directory)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return directory


def load_student(directory: str | Path) -> nn.Module:
    """The student saved in ``directory``, in eval mode: a float one through transformers, a
    quantized one rebuilt from its ``config.json`` with the saved integer weights put back.

    Example::

        from distill.export import load_student
        model = load_student("outputs/runs/<date>/<time>/student")
        logits = model(**tokenizer(["a fine film"], return_tensors="pt")).logits
    """
    import transformers

    from distill.quantization.serialize import has_quantized_export, read_quantized

    directory = Path(directory)
    config = transformers.AutoConfig.from_pretrained(directory)
    architecture = (config.architectures or [None])[0]
    model_class = getattr(transformers, architecture, None) if architecture else None
    if model_class is None:
        raise ValueError(f"{directory}/config.json names no transformers architecture ({architecture!r})")
    if not has_quantized_export(directory):
        return model_class.from_pretrained(directory).eval()
    # Built on the CPU, not on ``meta``: non-persistent buffers (BERT's position ids) are not saved.
    return read_quantized(model_class(config), directory)


def size_on_disk(directory: str | Path) -> int:
    """Bytes of the weight files of a saved student (tokenizer and config files not counted)."""
    return sum(
        path.stat().st_size for path in Path(directory).iterdir() if path.name.endswith(WEIGHT_FILE_SUFFIXES)
    )

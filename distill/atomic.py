"""Files and folders written whole or not at all, with the modes a plain write would give them.

Everything is staged next to its target and renamed into place. The staging helpers
(``mkstemp``, ``mkdtemp``, safetensors' own temporary file) create private 0600/0700 entries; a
rename keeps that mode, so without a fix a served student or a shared teacher cache would be
readable only by its owner. :func:`apply_umask_modes` gives the staged entries the modes
``open()`` / ``mkdir()`` would have given: 0o666 (files) or 0o777 (folders) minus the umask.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``).

    Elsewhere it is read by setting and restoring it, which another thread creating a file in the
    same instant could observe.
    """
    try:
        match = re.search(r"^Umask:\s*([0-7]+)$", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        match = None
    if match:
        return int(match.group(1), 8)
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0o666 minus the umask."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode ``mkdir`` gives a new folder: 0o777 minus the umask."""
    return 0o777 & ~current_umask()


def apply_umask_modes(root: str | Path) -> None:
    """Give ``root`` and everything below it the modes a plain write would have (see module doc)."""
    root = Path(root)
    files, folders = file_mode(), folder_mode()
    if not root.is_dir():
        os.chmod(root, files)
        return
    os.chmod(root, folders)
    for parent, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chmod(os.path.join(parent, name), folders)
        for name in filenames:
            path = os.path.join(parent, name)
            if not os.path.islink(path):
                os.chmod(path, files)


def staged_folder(target: str | Path) -> Path:
    """A new empty folder beside ``target`` (same filesystem, so it can be renamed onto it), with
    a plain ``mkdir``'s mode."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(staged, folder_mode())
    return staged


def write_folder_atomically(target: str | Path, build: Callable[[Path], None]) -> Path:
    """``build(staged)`` fills a staged sibling of ``target``, which then gets a plain ``mkdir``'s
    modes and is renamed onto ``target`` (which must not hold files); a build that fails or is
    interrupted removes its staged folder and leaves ``target`` as it was."""
    target = Path(target)
    staged = staged_folder(target)
    try:
        build(staged)
        apply_umask_modes(staged)
        os.replace(staged, target)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return target


def remove_staged_leftovers(target: str | Path) -> list[Path]:
    """Remove the staged siblings of ``target`` (``.<name>.tmp-*``) a killed writer left; returns them."""
    target = Path(target)
    stale = sorted(target.parent.glob(f".{target.name}.tmp-*"))
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` via a temporary file and a rename.

    The file gets the mode a plain ``open(path, "w")`` would give it (0o666 minus the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staged = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            os.fchmod(stream.fileno(), file_mode())
            stream.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(staged, path)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, payload: dict[str, Any]) -> None:
    """Write JSON through a temporary file and a rename: the file is whole or absent."""
    write_atomic(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")

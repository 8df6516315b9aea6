"""The teacher-output cache on disk: one folder, written whole or not at all, read memory-mapped.

Layout of ``<folder>/``::

    manifest.json          identity (distill.teacher_cache.identity), splits, sizes, build time
    <split>.logits.npy     (N, C) teacher logits of example i in row i (float16 or float32)

A folder is *complete* when its manifest exists and every array it lists opens with the shape it
records. Writers fill a staged folder beside the target (``.<name>.tmp-*``) and rename it into
place, so a killed build leaves a staged folder that is never read (the next build removes it)
and never a target that looks complete. Builders of one target take a file lock
(``<folder>.lock``) first: of several runs that start together (a sweep under the joblib
launcher, the ranks of a DDP run) one builds and the others wait, then read.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock

from distill.atomic import remove_staged_leftovers, write_atomic, write_folder_atomically
from distill.teacher_cache.identity import CACHE_FORMAT, CacheIdentity

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: Allowed ``teacher_cache.dtype`` values: how logits are stored (they are read back as float32).
STORE_DTYPES = ("float16", "float32")


class IncompleteCache(Exception):
    """A folder that is not a complete cache (no manifest, a missing or short array, another format)."""


def logits_file(folder: Path, split: str) -> Path:
    return folder / f"{split}.logits.npy"


class TeacherOutputCache:
    """A complete cache folder, opened read-only and memory-mapped (pages load as rows are read).

    Args:
        folder: the cache folder.

    Raises:
        IncompleteCache: naming what is missing.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        manifest_path = self.folder / MANIFEST
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as error:
            raise IncompleteCache(f"{manifest_path}: {error}") from None
        if self.manifest.get("identity", {}).get("format") != CACHE_FORMAT:
            raise IncompleteCache(f"{self.folder}: cache format {self.manifest.get('identity', {}).get('format')!r}, "
                                  f"this version reads {CACHE_FORMAT}")
        self.identity = CacheIdentity.from_dict(self.manifest["identity"])
        self._logits: dict[str, np.ndarray] = {}
        for split, entry in self.manifest["splits"].items():
            path = logits_file(self.folder, split)
            try:
                array = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as error:
                raise IncompleteCache(f"{path}: {error}") from None
            if list(array.shape) != entry["logits_shape"]:
                raise IncompleteCache(f"{path}: shape {list(array.shape)}, the manifest says {entry['logits_shape']}")
            self._logits[split] = array

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._logits)

    def num_examples(self, split: str) -> int:
        return self._logits[split].shape[0]

    def logits(self, split: str, example_index: torch.Tensor) -> torch.Tensor:
        """The teacher's logits of the examples ``example_index`` (``(B,)``): ``(B, C)`` float32,
        on ``example_index``'s device."""
        rows = example_index.detach().cpu().numpy()
        array = self._logits[split]
        if rows.size and (rows.min() < 0 or rows.max() >= array.shape[0]):
            raise IndexError(
                f"teacher cache {self.folder}: example index {int(rows.max())} outside the {split} split's "
                f"{array.shape[0]} examples; the batches do not come from the data the cache was built on"
            )
        values = torch.from_numpy(array[rows])  # fancy indexing copies the rows out of the map
        return values.to(device=example_index.device, dtype=torch.float32, non_blocking=True)

    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.folder.iterdir() if path.is_file())


def open_cache(folder: str | os.PathLike[str]) -> TeacherOutputCache | None:
    """The complete cache in ``folder``, or ``None`` when there is none (absent or incomplete)."""
    try:
        return TeacherOutputCache(folder)
    except IncompleteCache:
        return None


class CacheWriter:
    """Fills a staged folder: one memory-mapped ``(N, C)`` array per split, then the manifest.

    Used by :func:`build_atomically`, which renames the staged folder into place only after
    :meth:`finish` wrote the manifest.
    """

    def __init__(self, folder: Path, identity: CacheIdentity, dtype: str) -> None:
        if dtype not in STORE_DTYPES:
            raise ValueError(f"teacher_cache.dtype={dtype!r}: allowed {list(STORE_DTYPES)}")
        self.folder, self.identity, self.dtype = folder, identity, dtype
        self._arrays: dict[str, np.ndarray] = {}
        self._started = time.perf_counter()

    def split(self, name: str, num_examples: int, num_logits: int) -> np.ndarray:
        """A writable ``(num_examples, num_logits)`` array for split ``name`` (row i = example i)."""
        array = np.lib.format.open_memmap(
            logits_file(self.folder, name), mode="w+", dtype=np.dtype(self.dtype), shape=(num_examples, num_logits)
        )
        self._arrays[name] = array
        return array

    def finish(self, extra: dict[str, Any] | None = None) -> None:
        """Flush the arrays, then write the manifest (last: its presence marks a complete folder)."""
        splits = {}
        for name, array in self._arrays.items():
            array.flush()
            splits[name] = {"logits_shape": list(array.shape), "dtype": self.dtype}
        for path in self.folder.iterdir():  # the data on disk before the manifest names it
            with open(path, "rb") as stream:
                os.fsync(stream.fileno())
        manifest = {
            "identity": self.identity.to_dict(),
            "splits": splits,
            "build_seconds": round(time.perf_counter() - self._started, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(extra or {}),
        }
        write_atomic(self.folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def build_atomically(folder: str | os.PathLike[str], build: Callable[[Path], None]) -> tuple[TeacherOutputCache, bool]:
    """The complete cache at ``folder``: opened if it exists, else built by ``build(staged)`` and
    renamed into place. Returns the cache and whether this call built it.

    Under a file lock (``<folder>.lock``), so concurrent callers build it once. Inside the lock,
    staged folders left by killed builds and an incomplete ``folder`` are removed first.
    """
    folder = Path(folder).expanduser()
    folder.parent.mkdir(parents=True, exist_ok=True)
    existing = open_cache(folder)
    if existing is not None:
        return existing, False
    with FileLock(f"{folder}.lock"):
        existing = open_cache(folder)  # built by another process while this one waited
        if existing is not None:
            return existing, False
        for stale in remove_staged_leftovers(folder):
            log.info("teacher cache: removed %s, left by a build that did not finish", stale)
        if folder.exists():
            log.warning("teacher cache: %s is incomplete (no manifest or a short array); rebuilding it", folder)
            shutil.rmtree(folder)
        write_folder_atomically(folder, build)
    return TeacherOutputCache(folder), True

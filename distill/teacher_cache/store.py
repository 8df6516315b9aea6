"""The teacher-output cache on disk: one folder, written whole or not at all, read memory-mapped.

Layout of ``<folder>/``::

    manifest.json          identity (distill.teacher_cache.identity), splits, sizes, build time
    <split>.logits.npy     (N, C) teacher logits of example i in row i (float16 or float32)

and for a token-level teacher (``task: causal_lm``), per split, the scored positions of all
examples one after another (example i's are rows ``offsets[i]:offsets[i+1]``, in position order)::

    <split>.offsets.npy         (N + 1,) int64
    <split>.topk_values.npy     (P, k) the k largest logits (float16 or float32)
    <split>.topk_indices.npy    (P, k) their token ids (uint16 for vocabularies up to 65,536, else int32)
    <split>.tail_logsumexp.npy  (P, len(temperatures)) float32 log-sum-exp of the others / T

and, with ``teacher_cache.hidden_layers`` (class-logit splits), the chosen layers' hidden states of
the non-padding tokens, example i's rows at ``offsets[i]:offsets[i+1]``
(:mod:`~distill.teacher_cache.hidden_states`)::

    <split>.hidden_offsets.npy  (N + 1,) int64
    <split>.hidden_<layer>.npy  (R, H) per cached layer (float16 or float32)

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
from distill.losses.base import TopKLogits
from distill.teacher_cache.hidden_states import HiddenStatesSplit, row_ranges
from distill.teacher_cache.identity import CACHE_FORMAT, CacheIdentity

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: Allowed ``teacher_cache.dtype`` values: how logits are stored (they are read back as float32).
STORE_DTYPES = ("float16", "float32")


class IncompleteCache(Exception):
    """A folder that is not a complete cache (no manifest, a missing or short array, another format)."""


def logits_file(folder: Path, split: str) -> Path:
    return folder / f"{split}.logits.npy"


def token_file(folder: Path, split: str, part: str) -> Path:
    """One array of a token-level split: ``part`` in :data:`TOKEN_PARTS`."""
    return folder / f"{split}.{part}.npy"


#: The arrays of a token-level split (see the module docstring).
TOKEN_PARTS = ("offsets", "topk_values", "topk_indices", "tail_logsumexp")
#: A token-level split's manifest ``kind``.
TOKEN_TOP_K = "token_top_k"


class TokenTopKSplit:
    """The arrays of one token-level split (read-only maps, or the writer's staged arrays)."""

    def __init__(self, arrays: dict[str, np.ndarray], temperatures: list[float]) -> None:
        self.offsets = arrays["offsets"]
        self.values = arrays["topk_values"]
        self.indices = arrays["topk_indices"]
        self.tails = arrays["tail_logsumexp"]
        self.temperatures = [float(value) for value in temperatures]

    @property
    def num_examples(self) -> int:
        return self.offsets.shape[0] - 1

    def shape_problem(self) -> str | None:
        """Why the arrays do not fit together (``None`` when they do)."""
        rows, k = self.values.shape
        for part, array, shape in (("topk_indices", self.indices, (rows, k)),
                                   ("tail_logsumexp", self.tails, (rows, len(self.temperatures)))):
            if tuple(array.shape) != shape:
                return f"{part} has shape {list(array.shape)}, expected {list(shape)}"
        if self.offsets.ndim != 1 or int(self.offsets[-1]) != rows or int(self.offsets[0]) != 0:
            return f"offsets end at {int(self.offsets[-1])}, the arrays have {rows} rows"
        return None


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
        self._tokens: dict[str, TokenTopKSplit] = {}
        self._hidden: dict[str, HiddenStatesSplit] = {}
        layers = self.identity.stored.get("hidden_layers") or []
        for split, entry in self.manifest["splits"].items():
            if sorted((entry.get("hidden") or {}).get("layers", [])) != sorted(layers):
                raise IncompleteCache(f"{self.folder}: {split} split holds hidden layers "
                                      f"{(entry.get('hidden') or {}).get('layers', [])}, the identity says {layers}")
            if entry.get("hidden"):
                try:
                    self._hidden[split] = HiddenStatesSplit.open(self.folder, split, entry["hidden"])
                except (OSError, ValueError) as error:
                    raise IncompleteCache(f"{self.folder}: {error}") from None
            if entry.get("kind") == TOKEN_TOP_K:
                self._tokens[split] = self._open_token_split(split, entry)
                continue
            path = logits_file(self.folder, split)
            try:
                array = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as error:
                raise IncompleteCache(f"{path}: {error}") from None
            if list(array.shape) != entry["logits_shape"]:
                raise IncompleteCache(f"{path}: shape {list(array.shape)}, the manifest says {entry['logits_shape']}")
            self._logits[split] = array

    def _open_token_split(self, split: str, entry: dict[str, Any]) -> TokenTopKSplit:
        arrays = {}
        for part in TOKEN_PARTS:
            path = token_file(self.folder, split, part)
            try:
                arrays[part] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as error:
                raise IncompleteCache(f"{path}: {error}") from None
        arrays_split = TokenTopKSplit(arrays, entry["temperatures"])
        problem = arrays_split.shape_problem()
        if problem is None and [arrays_split.num_examples, *arrays_split.values.shape] != [
            entry["examples"], entry["rows"], entry["k"]
        ]:
            problem = (f"{arrays_split.num_examples} examples, {list(arrays_split.values.shape)} values; the manifest "
                       f"says {entry['examples']} examples, {[entry['rows'], entry['k']]}")
        if problem is not None:
            raise IncompleteCache(f"{self.folder}: {split} split: {problem}")
        return arrays_split

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._logits) + tuple(self._tokens)

    def token_level(self, split: str) -> bool:
        """Whether ``split`` holds a token-level teacher's top-k rows (else one logit row per example)."""
        return split in self._tokens

    def hidden_layers(self, split: str) -> tuple[int, ...]:
        """The teacher's ``hidden_states`` indices stored for ``split`` (empty: none)."""
        return tuple(self._hidden[split].layers) if split in self._hidden else ()

    def hidden_states(self, split: str, example_index: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor, int]:
        """The stored hidden-state rows of the examples ``example_index`` (``(B,)``), each example's
        non-padding tokens one after another: layer -> ``(R_b, H)`` float32, each example's row
        count ``(B,)``, and the teacher's ``num_hidden_layers``; on ``example_index``'s device."""
        stored = self._hidden[split]
        self._checked_rows(example_index, stored.num_examples, split)
        rows, counts = stored.read(example_index)
        return rows, counts, stored.num_hidden_layers

    def num_examples(self, split: str) -> int:
        if split in self._tokens:
            return self._tokens[split].num_examples
        return self._logits[split].shape[0]

    def token_top_k(self, split: str, example_index: torch.Tensor, temperature: float) -> tuple[TopKLogits, torch.Tensor]:
        """The stored rows of the examples ``example_index`` (``(B,)``), one after another (each
        example's scored positions in order), with the tail at ``temperature``, and how many rows
        each example has (``(B,)``). Float32 / int64 tensors on ``example_index``'s device.

        Raises:
            ValueError: the tail was not stored for ``temperature`` (naming the stored ones).
        """
        stored = self._tokens[split]
        matches = [column for column, value in enumerate(stored.temperatures) if value == float(temperature)]
        if not matches:
            raise ValueError(
                f"teacher cache {self.folder}: the tail mass was stored for temperatures {stored.temperatures}, "
                f"not for loss.temperature={float(temperature):g}; rebuild with teacher_cache.temperatures "
                "listing every temperature the runs use"
            )
        examples = self._checked_rows(example_index, stored.num_examples, split)
        starts, stops = stored.offsets[examples], stored.offsets[examples + 1]
        rows = row_ranges(starts, stops)
        device = example_index.device
        top_k = TopKLogits(
            values=torch.from_numpy(np.asarray(stored.values[rows], dtype=np.float32)).to(device),
            indices=torch.from_numpy(stored.indices[rows].astype(np.int64)).to(device),
            tail_logsumexp=torch.from_numpy(np.ascontiguousarray(stored.tails[rows, matches[0]])).to(device),
            temperature=float(temperature),
        )
        return top_k, torch.from_numpy((stops - starts).astype(np.int64)).to(device)

    def _checked_rows(self, example_index: torch.Tensor, count: int, split: str) -> np.ndarray:
        rows = example_index.detach().cpu().numpy()
        if rows.size and (rows.min() < 0 or rows.max() >= count):
            raise IndexError(
                f"teacher cache {self.folder}: example index {int(rows.max())} outside the {split} split's "
                f"{count} examples; the batches do not come from the data the cache was built on"
            )
        return rows

    def logits(self, split: str, example_index: torch.Tensor) -> torch.Tensor:
        """The teacher's logits of the examples ``example_index`` (``(B,)``): ``(B, C)`` float32,
        on ``example_index``'s device."""
        array = self._logits[split]
        rows = self._checked_rows(example_index, array.shape[0], split)
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
        self._tokens: dict[str, TokenTopKSplit] = {}
        self._hidden: dict[str, HiddenStatesSplit] = {}
        self._started = time.perf_counter()

    def split(self, name: str, num_examples: int, num_logits: int) -> np.ndarray:
        """A writable ``(num_examples, num_logits)`` array for split ``name`` (row i = example i)."""
        array = np.lib.format.open_memmap(
            logits_file(self.folder, name), mode="w+", dtype=np.dtype(self.dtype), shape=(num_examples, num_logits)
        )
        self._arrays[name] = array
        return array

    def token_split(
        self, name: str, rows_per_example: list[int], k: int, temperatures: list[float], vocab_size: int
    ) -> TokenTopKSplit:
        """Writable arrays of a token-level split: example i gets ``rows_per_example[i]`` rows."""
        offsets = np.zeros(len(rows_per_example) + 1, dtype=np.int64)
        np.cumsum(rows_per_example, out=offsets[1:])
        rows = int(offsets[-1])
        dtypes = {"offsets": np.int64, "topk_values": np.dtype(self.dtype),
                  "topk_indices": np.uint16 if vocab_size <= 2**16 else np.int32, "tail_logsumexp": np.float32}
        shapes = {"offsets": offsets.shape, "topk_values": (rows, k), "topk_indices": (rows, k),
                  "tail_logsumexp": (rows, len(temperatures))}
        arrays = {
            part: np.lib.format.open_memmap(token_file(self.folder, name, part), mode="w+", dtype=dtypes[part],
                                            shape=shapes[part])
            for part in TOKEN_PARTS
        }
        arrays["offsets"][:] = offsets
        self._tokens[name] = TokenTopKSplit(arrays, temperatures)
        return self._tokens[name]

    def hidden_split(self, name: str, rows_per_example: list[int], layers: list[int], width: int,
                     num_hidden_layers: int) -> HiddenStatesSplit:
        """Writable hidden-state arrays of split ``name``: example i gets ``rows_per_example[i]`` rows
        (its non-padding tokens) of each of ``layers``, ``width`` wide."""
        self._hidden[name] = HiddenStatesSplit.create(self.folder, name, rows_per_example, layers, width, self.dtype,
                                                      num_hidden_layers)
        return self._hidden[name]

    def finish(self, extra: dict[str, Any] | None = None) -> None:
        """Flush the arrays, then write the manifest (last: its presence marks a complete folder)."""
        splits = {}
        for name, array in self._arrays.items():
            array.flush()
            splits[name] = {"logits_shape": list(array.shape), "dtype": self.dtype}
        for name, stored in self._tokens.items():
            for array in (stored.offsets, stored.values, stored.indices, stored.tails):
                array.flush()
            splits[name] = {"kind": TOKEN_TOP_K, "examples": stored.num_examples, "rows": stored.values.shape[0],
                            "k": stored.values.shape[1], "temperatures": stored.temperatures, "dtype": self.dtype,
                            "indices_dtype": str(stored.indices.dtype)}
        for name, hidden in self._hidden.items():
            hidden.flush()
            splits[name]["hidden"] = hidden.manifest_entry()
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

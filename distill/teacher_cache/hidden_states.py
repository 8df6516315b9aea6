"""A sequence-classification teacher's hidden states in the cache (``teacher_cache.hidden_layers``).

Per split, the hidden states of the **non-padding tokens** only (``attention_mask == 1``), every
example's rows one after another (example ``i``'s rows are ``offsets[i]:offsets[i+1]``, its real
tokens in position order), one array per cached layer::

    <split>.hidden_offsets.npy     (N + 1,) int64
    <split>.hidden_<layer>.npy     (R, H) layer <layer> of ``hidden_states`` (0 = embeddings), in the
                                   cache dtype (float16 or float32); R = the split's real tokens

so a layer costs ``R × H × 2`` bytes in float16 (``× 4`` in float32): tokens × width × 2 per
example. Layer numbers are ``hidden_states`` indices normalised to ``0..num_hidden_layers``
(``-1`` is stored as ``num_hidden_layers``). A split's manifest entry records them under
``"hidden"`` (:meth:`HiddenStatesSplit.manifest_entry`). Read memory-mapped: a batch reads its
examples' rows only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

OFFSETS = "hidden_offsets"


def hidden_file(folder: Path, split: str, layer: int) -> Path:
    """The ``(R, H)`` array of one cached layer of ``split``."""
    return folder / f"{split}.hidden_{layer}.npy"


def offsets_file(folder: Path, split: str) -> Path:
    return folder / f"{split}.{OFFSETS}.npy"


def normalise_layers(layers: Sequence[int], num_hidden_layers: int) -> list[int]:
    """``hidden_states`` indices (``-1`` = last) as sorted, distinct indices in ``0..num_hidden_layers``.

    Raises:
        ValueError: naming ``teacher_cache.hidden_layers``, the bad indices and the valid range.
    """
    depth = int(num_hidden_layers)
    bad = [layer for layer in layers if not -(depth + 1) <= int(layer) <= depth]
    if bad:
        raise ValueError(
            f"teacher_cache.hidden_layers={list(layers)}: indices {bad} are out of range for a teacher with "
            f"{depth} layers (hidden_states 0..{depth}: 0 = embeddings, {depth} = last; or -{depth + 1}..-1 "
            "from the end)"
        )
    return sorted({int(layer) % (depth + 1) for layer in layers})


class HiddenStatesSplit:
    """The hidden-state arrays of one split: ``offsets`` and one ``(R, H)`` array per layer (read-only
    maps, or the writer's staged arrays).

    Args:
        offsets: ``(N + 1,)`` int64, example ``i``'s rows are ``offsets[i]:offsets[i+1]``.
        layers: layer index -> ``(R, H)`` array.
        num_hidden_layers: the teacher's transformer layers (``hidden_states`` has one more entry).
    """

    def __init__(self, offsets: np.ndarray, layers: dict[int, np.ndarray], num_hidden_layers: int) -> None:
        self.offsets = offsets
        self.layers = dict(sorted(layers.items()))
        self.num_hidden_layers = int(num_hidden_layers)

    @property
    def num_examples(self) -> int:
        return self.offsets.shape[0] - 1

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])

    @property
    def width(self) -> int:
        return next(iter(self.layers.values())).shape[1]

    def manifest_entry(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "examples": self.num_examples, "rows": self.rows, "width": self.width,
                "num_hidden_layers": self.num_hidden_layers}

    def shape_problem(self, entry: dict[str, Any] | None = None) -> str | None:
        """Why the arrays do not fit together, or do not match the manifest ``entry`` (``None`` when they do)."""
        if self.offsets.ndim != 1 or self.offsets.shape[0] < 1 or int(self.offsets[0]) != 0:
            return f"{OFFSETS} has shape {list(self.offsets.shape)} and starts at {self.offsets[:1].tolist()}"
        for layer, array in self.layers.items():
            if array.ndim != 2 or array.shape[0] != self.rows:
                return f"hidden_{layer} has shape {list(array.shape)}, the offsets end at {self.rows} rows"
        if entry is not None and self.manifest_entry() != entry:
            return f"hidden states {self.manifest_entry()}, the manifest says {entry}"
        return None

    @classmethod
    def create(cls, folder: Path, split: str, rows_per_example: Sequence[int], layers: Sequence[int], width: int,
               dtype: str, num_hidden_layers: int) -> HiddenStatesSplit:
        """Writable staged arrays: example ``i`` gets ``rows_per_example[i]`` rows of every layer."""
        offsets = np.lib.format.open_memmap(offsets_file(folder, split), mode="w+", dtype=np.int64,
                                            shape=(len(rows_per_example) + 1,))
        offsets[0] = 0
        np.cumsum(np.asarray(rows_per_example, dtype=np.int64), out=offsets[1:])
        rows = int(offsets[-1])
        arrays = {
            int(layer): np.lib.format.open_memmap(hidden_file(folder, split, int(layer)), mode="w+",
                                                  dtype=np.dtype(dtype), shape=(rows, int(width)))
            for layer in layers
        }
        return cls(offsets, arrays, num_hidden_layers)

    @classmethod
    def open(cls, folder: Path, split: str, entry: dict[str, Any]) -> HiddenStatesSplit:
        """The arrays a manifest ``entry`` lists, memory-mapped read-only.

        Raises:
            OSError, ValueError: a file is missing or short, or the arrays do not match ``entry``.
        """
        offsets = _load(offsets_file(folder, split))
        layers = {int(layer): _load(hidden_file(folder, split, int(layer))) for layer in entry["layers"]}
        stored = cls(offsets, layers, entry["num_hidden_layers"])
        problem = stored.shape_problem(entry)
        if problem is not None:
            raise ValueError(f"{split} split: {problem}")
        return stored

    def flush(self) -> None:
        for array in (self.offsets, *self.layers.values()):
            array.flush()

    def write(self, example_index: np.ndarray, attention_mask: torch.Tensor,
              hidden_states: Sequence[torch.Tensor]) -> None:
        """Store a teacher batch's hidden states: the rows of example ``example_index[b]`` are
        ``hidden_states[layer][b][attention_mask[b] == 1]``, for every cached layer.

        Raises:
            RuntimeError: an example's real tokens differ in number from the rows counted for it.
        """
        mask = attention_mask.bool()
        counts = mask.sum(1).cpu().numpy()
        starts, stops = self.offsets[example_index], self.offsets[example_index + 1]
        if not np.array_equal(counts, stops - starts):
            bad = [int(example) for example, count, want in zip(example_index, counts, stops - starts) if count != want]
            raise RuntimeError(f"examples {bad}: the batch's real tokens differ from the rows counted for them")
        rows = row_ranges(starts, stops)
        for layer, array in self.layers.items():
            state = hidden_states[layer]
            if state.size(-1) != array.shape[1]:
                raise RuntimeError(f"hidden_states[{layer}] has width {state.size(-1)}, the cache {array.shape[1]}")
            array[rows] = state[mask].float().cpu().numpy().astype(array.dtype, copy=False)

    def read(self, example_index: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """The rows of the examples ``example_index`` (``(B,)``), one example after another: layer ->
        ``(R_b, H)`` float32, and each example's row count ``(B,)`` int64, on ``example_index``'s device."""
        examples = example_index.detach().cpu().numpy()
        starts, stops = self.offsets[examples], self.offsets[examples + 1]
        rows = row_ranges(starts, stops)
        device = example_index.device
        layers = {
            layer: torch.from_numpy(np.asarray(array[rows], dtype=np.float32)).to(device)
            for layer, array in self.layers.items()
        }
        return layers, torch.from_numpy((stops - starts).astype(np.int64)).to(device)


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise ValueError(f"{path.name}: {error}") from None


def row_ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """``arange(start, stop)`` of each example, concatenated (int64)."""
    return np.concatenate([np.arange(start, stop) for start, stop in zip(starts, stops)] or [np.zeros(0, np.int64)])


def place_hidden_states(
    rows: dict[int, torch.Tensor], counts: torch.Tensor, attention_mask: torch.Tensor, num_hidden_layers: int,
    example_index: torch.Tensor,
) -> tuple[torch.Tensor | None, ...]:
    """Cached rows laid out as a teacher's ``hidden_states``: a tuple of ``num_hidden_layers + 1``
    entries, each cached layer ``(B, L, H)`` with example ``b``'s rows at the positions where
    ``attention_mask[b] == 1`` (in order) and zeros at padding, ``None`` at the layers not cached.

    Raises:
        ValueError: an example's real-token count in this batch differs from its stored row count
            (naming the examples by ``example_index``).
    """
    mask = attention_mask.bool()
    real = mask.sum(1)
    counts = counts.to(real.device)
    if not torch.equal(real, counts):
        differ = (real != counts).nonzero().flatten().tolist()
        raise ValueError(
            f"teacher cache: examples {[int(example_index[i]) for i in differ]} have {real[differ].tolist()} "
            f"non-padding tokens in this batch, the cache stored {counts[differ].tolist()} rows of hidden states; "
            "the data's tokens differ from those it was built on"
        )
    batch_size, length = mask.shape
    states: list[torch.Tensor | None] = [None] * (num_hidden_layers + 1)
    for layer, values in rows.items():
        placed = values.new_zeros(batch_size, length, values.size(-1))
        placed[mask] = values
        states[layer] = placed
    return tuple(states)


__all__ = ["HiddenStatesSplit", "hidden_file", "normalise_layers", "offsets_file", "place_hidden_states", "row_ranges"]

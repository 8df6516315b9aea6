"""The folder of teacher generations: a manifest and shards, each written whole or not at all.

Layout of ``<output_dir>/``::

    manifest.json      identity (format, settings, prompt count + SHA-256, model, tokenizer),
                       num_shards, and ``complete: true`` once every shard is in place
    shard-00000/       rows of prompts [0, shard_size), a ``datasets.Dataset.save_to_disk`` folder
    shard-00001/       rows of prompts [shard_size, 2 * shard_size) ...
    .generate.lock     held by the writing process (a second writer waits for it)

Each shard is saved into a staged folder beside it (``.shard-00001.tmp-*``) and renamed into place
only when complete; the manifest is replaced atomically (:func:`distill.atomic.write_json_atomic`).
So a folder killed at any point holds whole shards only, plus staged leftovers that the next run
removes. A shard folder's presence is its completeness; ``complete: true`` says all are present.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets
from filelock import FileLock, Timeout

from distill.atomic import write_folder_atomically, write_json_atomic

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LOCK = ".generate.lock"
#: Bumped when the layout changes: a folder of another format is refused, never misread.
STORE_FORMAT = 1
COLUMNS = datasets.Features(
    {"prompt": datasets.Value("string"), "completion": datasets.Value("string"), "prompt_index": datasets.Value("int64")}
)
RESUME_HINT = (
    "run the same `distill ... stage=generate` command again (or call distill.generation.generate_dataset(model, "
    "tokenizer, prompts, settings, {folder!r}) with the same arguments): it skips the finished shards and writes "
    "the rest"
)


class IncompleteGenerations(RuntimeError):
    """A folder that holds no finished generation run (no manifest, or not ``complete``)."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def prompts_sha256(prompts: Sequence[str]) -> str:
    """SHA-256 of the prompt list: each prompt's UTF-8 length, then its bytes, in order (so
    ``["ab", "c"]`` and ``["a", "bc"]`` differ)."""
    digest = hashlib.sha256()
    for prompt in prompts:
        data = prompt.encode("utf-8")
        digest.update(f"{len(data)}:".encode())
        digest.update(data)
    return digest.hexdigest()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def identity_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One line per field that differs (dotted name, stored value, current value)."""
    old, new = _flatten(stored), _flatten(current)
    missing = object()
    return [
        f"{name}: stored {old.get(name, missing)!r}, now {new.get(name, missing)!r}".replace(repr(missing), "(absent)")
        for name in sorted(set(old) | set(new))
        if old.get(name, missing) != new.get(name, missing)
    ]


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _fsync_tree(root: Path) -> None:
    """Flush a staged folder's files to disk before it is renamed into place."""
    for parent, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(parent, name), "rb") as stream:
                os.fsync(stream.fileno())


class GenerationStore:
    """An output folder opened for writing by :func:`open_store` (which holds its lock)."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder, self.manifest = folder, manifest

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    def has_shard(self, index: int) -> bool:
        return (self.folder / shard_name(index)).is_dir()

    def write_shard(self, index: int, rows: dict[str, list]) -> Path:
        """Save ``rows`` (the :data:`COLUMNS`) as shard ``index``: staged, flushed, renamed into place."""
        def save(staged: Path) -> None:
            datasets.Dataset.from_dict(rows, features=COLUMNS).save_to_disk(str(staged))
            _fsync_tree(staged)

        bars_were_on = datasets.is_progress_bar_enabled()
        try:
            datasets.disable_progress_bars()  # one "Saving the dataset" bar per shard is noise
            return write_folder_atomically(self.folder / shard_name(index), save)
        finally:
            if bars_were_on:
                datasets.enable_progress_bars()

    def mark_complete(self) -> None:
        self.manifest = {**self.manifest, "complete": True, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json_atomic(self.folder / MANIFEST, self.manifest)


def _remove_leftovers(folder: Path) -> None:
    """Remove what a killed writer leaves: staged shards and staged manifests."""
    for stale in [*folder.glob(".shard-*.tmp-*"), *folder.glob(f".{MANIFEST}.*")]:
        log.info("generation: removing %s, left by a run that was stopped", stale)
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _refuse_foreign(folder: Path) -> None:
    """Raise ``ValueError`` when ``folder`` has visible entries but no manifest (not ours to write)."""
    if (folder / MANIFEST).exists():
        return
    visible = sorted(entry.name for entry in folder.iterdir() if not entry.name.startswith("."))
    if visible:
        raise ValueError(
            f"{folder} is not empty ({', '.join(visible[:5])}) and has no {MANIFEST}: it is not a "
            "generation folder; choose an empty or new output_dir"
        )


@contextmanager
def open_store(
    folder: str | os.PathLike[str], identity: dict[str, Any], num_shards: int, about: dict[str, Any] | None = None
) -> Iterator[GenerationStore]:
    """Open ``folder`` for the run described by ``identity``, under its lock.

    A new or empty folder gets a manifest (``complete: false``). A folder with a manifest of the
    same identity is resumed: leftovers of a killed run are removed, finished shards stay. A
    manifest of another identity, or a non-empty folder without one, raises ``ValueError``
    naming what differs; nothing in the folder is touched.
    """
    folder = Path(folder).expanduser()
    if folder.is_dir():
        _refuse_foreign(folder)  # before the lock file is created in someone else's folder
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("generation: another process is writing %s; waiting for it to finish", folder)
        lock.acquire()
    try:
        manifest = _read_manifest(folder)
        if manifest is None:
            _refuse_foreign(folder)
            manifest = {"identity": identity, "num_shards": num_shards, "complete": False, **(about or {})}
            write_json_atomic(folder / MANIFEST, manifest)
        else:
            differences = identity_differences(manifest.get("identity", {}), identity)
            if differences:
                raise ValueError(
                    f"{folder} holds generations of other inputs; refusing to mix them. Differences:\n  "
                    + "\n  ".join(differences)
                    + "\nUse another output_dir, or delete this one to start over."
                )
        _remove_leftovers(folder)
        yield GenerationStore(folder, manifest)
    finally:
        lock.release()


def load_generations(folder: str | os.PathLike[str]) -> datasets.Dataset:
    """The rows of a finished generation folder: its shards concatenated in order.

    Columns: ``prompt`` (as the model saw it: cut to ``max_prompt_length`` tokens where that cut
    it), ``completion`` (the generated text only), ``prompt_index`` (0, 1, ... in prompt order).

    Raises:
        IncompleteGenerations: no manifest, or the run did not finish (naming how many shards of
            how many exist and how to resume). Partial data is never returned.
    """
    folder = Path(folder).expanduser()
    manifest = _read_manifest(folder) if folder.is_dir() else None
    if manifest is None:
        raise IncompleteGenerations(
            f"{folder} is not a generation folder: no {MANIFEST} (nothing was generated there yet)"
        )
    num_shards = int(manifest["num_shards"])
    present = sum((folder / shard_name(index)).is_dir() for index in range(num_shards))
    if not manifest.get("complete"):
        raise IncompleteGenerations(
            f"{folder} is incomplete: {present} of {num_shards} shards written (the run was stopped). "
            f"To resume, {RESUME_HINT.format(folder=str(folder))}."
        )
    if present != num_shards:
        raise IncompleteGenerations(f"{folder}: the manifest says complete, but only {present} of {num_shards} shards exist")
    shards = [datasets.load_from_disk(str(folder / shard_name(index))) for index in range(num_shards)]
    dataset = datasets.concatenate_datasets(shards)
    num_prompts = manifest["identity"]["num_prompts"]
    if list(dataset["prompt_index"]) != list(range(num_prompts)):
        raise IncompleteGenerations(f"{folder}: the shards do not hold prompts 0..{num_prompts - 1} once each, in order")
    return dataset

"""The cache folder: written whole or not at all, rebuilt (never read) after a killed build, built once
by concurrent callers."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.teacher_cache import CacheIdentity, IncompleteCache, TeacherOutputCache, build_atomically, open_cache
from distill.teacher_cache.store import CacheWriter, logits_file


def identity(dtype: str = "float32") -> CacheIdentity:
    return CacheIdentity("t" * 64, {"train": {"examples": 5, "tokens_sha256": "d" * 64}}, {"dtype": dtype, "logits": "full"})


def fill(values: np.ndarray, dtype: str = "float32"):
    def build(folder: Path) -> None:
        writer = CacheWriter(folder, identity(dtype), dtype)
        writer.split("train", *values.shape)[:] = values
        writer.finish()

    return build


VALUES = np.arange(15, dtype=np.float32).reshape(5, 3) / 7


def test_a_built_cache_reads_back_each_example_row(tmp_path):
    cache, built = build_atomically(tmp_path / "c", fill(VALUES))
    assert built
    rows = cache.logits("train", torch.tensor([4, 0, 4]))
    assert rows.dtype == torch.float32
    assert torch.equal(rows, torch.from_numpy(VALUES[[4, 0, 4]]))
    again, built_again = build_atomically(tmp_path / "c", fill(VALUES + 1))
    assert not built_again and torch.equal(again.logits("train", torch.tensor([1])), torch.from_numpy(VALUES[[1]]))


def test_float16_storage_is_within_half_precision(tmp_path):
    cache, _ = build_atomically(tmp_path / "c", fill(VALUES * 100, "float16"))
    rows = cache.logits("train", torch.arange(5))
    torch.testing.assert_close(rows, torch.from_numpy(VALUES * 100), rtol=2**-11, atol=0)
    build_atomically(tmp_path / "c32", fill(VALUES * 100))
    sizes = [logits_file(tmp_path / name, "train").stat().st_size for name in ("c32", "c")]
    assert sizes[0] - sizes[1] == VALUES.nbytes // 2  # half the bytes (same header)


def test_an_index_outside_the_split_names_the_split(tmp_path):
    cache, _ = build_atomically(tmp_path / "c", fill(VALUES))
    with pytest.raises(IndexError, match="outside the train split's 5 examples"):
        cache.logits("train", torch.tensor([5]))


def test_a_build_that_fails_leaves_nothing_that_looks_complete(tmp_path):
    def killed(folder: Path) -> None:
        writer = CacheWriter(folder, identity(), "float32")
        writer.split("train", 5, 3)[:2] = VALUES[:2]
        raise KeyboardInterrupt  # stopped half way: no manifest written

    with pytest.raises(KeyboardInterrupt):
        build_atomically(tmp_path / "c", killed)
    assert not (tmp_path / "c").exists()
    assert list(tmp_path.glob(".c.tmp-*")) == []


def test_a_staged_folder_of_a_killed_process_is_rebuilt_not_read(tmp_path):
    # A SIGKILL leaves the staged folder (no cleanup runs): arrays but no manifest.
    staged = tmp_path / ".c.tmp-killed"
    staged.mkdir()
    CacheWriter(staged, identity(), "float32").split("train", 5, 3)[:] = 99.0
    # ... and a target someone copied without its manifest.
    target = tmp_path / "c"
    target.mkdir()
    np.save(logits_file(target, "train"), np.full((5, 3), 99.0, dtype=np.float32))
    assert open_cache(target) is None
    cache, built = build_atomically(target, fill(VALUES))
    assert built and not staged.exists()
    assert torch.equal(cache.logits("train", torch.arange(5)), torch.from_numpy(VALUES))


def test_a_truncated_array_is_not_a_complete_cache(tmp_path):
    build_atomically(tmp_path / "c", fill(VALUES))
    path = logits_file(tmp_path / "c", "train")
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(IncompleteCache, match="train.logits.npy"):
        TeacherOutputCache(tmp_path / "c")


def _slow_build(target: str, marker: str, queue) -> None:
    def build(folder: Path) -> None:
        with open(marker, "a") as stream:
            stream.write("built\n")
        time.sleep(1.0)  # long enough for the other process to arrive while this one builds
        fill(VALUES)(folder)

    cache, built = build_atomically(target, build)
    queue.put((built, cache.logits("train", torch.arange(5)).tolist()))


def test_two_concurrent_runs_build_one_cache(tmp_path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    marker = tmp_path / "builds.txt"
    processes = [context.Process(target=_slow_build, args=(str(tmp_path / "c"), str(marker), queue)) for _ in range(2)]
    for process in processes:
        process.start()
    results = [queue.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert marker.read_text().count("built") == 1
    assert sorted(built for built, _ in results) == [False, True]
    assert results[0][1] == results[1][1] == VALUES.tolist()

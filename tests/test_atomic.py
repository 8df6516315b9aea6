"""Atomic writes keep a plain write's modes: the umask decides, not the staging (distill/atomic.py,
distill/export.py)."""

import os
import stat
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from conftest import tiny_bert
from distill.atomic import current_umask, write_atomic, write_json_atomic
from distill.export import save_student

#: umask -> (file mode, folder mode) that open() / mkdir() give under it.
MODES = {0o022: (0o644, 0o755), 0o077: (0o600, 0o700), 0o002: (0o664, 0o775)}


@pytest.fixture(params=sorted(MODES), ids=lambda mask: f"umask{mask:04o}")
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_the_mask_without_changing_it(umask):
    assert current_umask() == umask
    assert current_umask() == umask


def test_written_files_have_the_umask_mode(umask, tmp_path):
    files, folders = MODES[umask]
    write_atomic(tmp_path / "report.md", "# report\n")
    write_json_atomic(tmp_path / "new" / "metrics.json", {"accuracy": 0.9})
    assert mode(tmp_path / "report.md") == files
    assert mode(tmp_path / "new" / "metrics.json") == files
    assert mode(tmp_path / "new") == folders
    # a plain write, for reference: the same modes
    (tmp_path / "plain.txt").write_text("x")
    assert mode(tmp_path / "plain.txt") == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "plain.txt", "report.md"]  # nothing staged left


def test_replacing_a_file_gives_it_the_umask_mode(umask, tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("{}")
    target.chmod(0o600)
    write_json_atomic(target, {"accuracy": 0.9})
    assert mode(target) == MODES[umask][0]


def test_saved_student_folder_and_files_have_the_umask_modes(umask, tmp_path, tokenizer):
    files, folders = MODES[umask]
    target = save_student(tiny_bert(num_layers=1), tokenizer, tmp_path / "student")
    assert mode(target) == folders
    written = sorted(p.name for p in target.iterdir())
    assert "model.safetensors" in written and "config.json" in written and "tokenizer.json" in written
    for path in target.rglob("*"):
        assert mode(path) == (folders if path.is_dir() else files), path.name
    assert [p.name for p in tmp_path.iterdir()] == ["student"]  # no staging folder left
    assert AutoTokenizer.from_pretrained(target)("a film")["input_ids"]

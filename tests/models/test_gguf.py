"""GGUF models shipped in PyPI packages: found without importing the package, converted once."""

from __future__ import annotations

import pytest

import distill.models.gguf as gguf
from distill.models.gguf import COMPLETE_MARKER, converted_folder, gguf_file_in, package_folder


def test_a_package_is_found_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "shipped_model"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('needs tools that are not installed')\n")
    (package / "Model.Q4_1.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert package_folder("shipped_model") == package
    assert gguf_file_in(package) == package / "Model.Q4_1.gguf"
    assert package_folder("no_such_package_here") is None
    (package / "Other.gguf").write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="several GGUF files"):
        gguf_file_in(package)


def test_conversion_runs_once_and_a_failed_one_leaves_nothing(tmp_path, monkeypatch):
    source = tmp_path / "Model.gguf"
    source.write_bytes(b"GGUF weights")
    calls = []

    def fake_convert(path, folder):
        calls.append(path)
        if len(calls) == 1:
            (folder / "model.safetensors").write_bytes(b"half")
            raise KeyboardInterrupt  # stopped mid-way
        (folder / "model.safetensors").write_bytes(b"weights")
        (folder / COMPLETE_MARKER).write_text("{}")

    monkeypatch.setattr(gguf, "_convert", fake_convert)
    with pytest.raises(KeyboardInterrupt):
        converted_folder(source, cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache" / "gguf").glob("Model-*/model.safetensors"))  # nothing half-written kept
    folder = converted_folder(source, cache_dir=tmp_path / "cache")
    assert (folder / "model.safetensors").read_bytes() == b"weights" and folder.name.startswith("Model-")
    assert converted_folder(source, cache_dir=tmp_path / "cache") == folder and len(calls) == 2  # reused
    source.write_bytes(b"other GGUF weights")  # another file: another folder
    assert converted_folder(source, cache_dir=tmp_path / "cache") != folder

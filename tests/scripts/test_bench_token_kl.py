"""scripts/bench_token_kl.py: its naive losses and its checks, in process, at a tiny size."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_token_kl.py"
spec = importlib.util.spec_from_file_location("bench_token_kl", SCRIPT)
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench
spec.loader.exec_module(bench)


def tiny_args(variant: str) -> argparse.Namespace:
    return argparse.Namespace(variant=variant, rows=12, vocab=32, chunk_size=5, dtype="float32", device="cpu",
                              temperature=2.0, beta=0.3, repeats=1)


@pytest.mark.parametrize("kind", bench.LOSSES)
def test_naive_and_chunked_versions_agree(kind):
    check = bench.run_check(tiny_args(f"check:{kind}"))
    assert check["loss_rel"] < 1e-5 and check["grad_rel"] < 1e-4
    assert check["chunked_loss_err"] < 1e-6 and check["naive_loss_err"] < 1e-5


def test_a_variant_reports_peak_times_and_value():
    result = bench.run_variant(tiny_args("jsd:chunked"))
    assert set(result) == {"peak_mib", "first_s", "times_s", "value"} and len(result["times_s"]) == 1
    assert result["value"] > 0

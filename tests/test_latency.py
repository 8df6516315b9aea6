"""Interleaved latency: every round times each model once, in a rotating order, and reports the
median and spread over rounds with the thread count used."""

import torch
from torch import nn

from distill.latency import interleaved_latency


class Recorder(nn.Module):
    def __init__(self, name: str, calls: list[str], size: int) -> None:
        super().__init__()
        self.name, self.calls, self.linear = name, calls, nn.Linear(size, size)

    def forward(self, x):
        self.calls.append(self.name)
        return self.linear(x)


def test_models_are_timed_in_interleaved_rounds_with_median_and_spread():
    calls: list[str] = []
    big, small = Recorder("big", calls, 512), Recorder("small", calls, 8)
    models = {"big": _Fixed(big, torch.randn(64, 512)), "small": _Fixed(small, torch.randn(64, 8)).eval()}
    timings = interleaved_latency(models, {}, rounds=6, warmup=1, threads=1)
    # Interleaved, not one model's rounds then the other's: the timed model switches at least once a
    # round (the Timer may call a model more than once per measurement).
    switches = sum(1 for before, after in zip(calls, calls[1:]) if before != after)
    assert switches >= 6 and calls.count("big") == calls.count("small")
    assert set(timings) == {"big", "small"}
    for figures in timings.values():
        assert figures["rounds"] == 6 and figures["threads"] == 1 and figures["iqr_ms"] >= 0
    assert timings["big"]["median_ms"] > timings["small"]["median_ms"]  # 64x512x512 vs 64x8x8 multiply-adds
    assert models["big"].training and not models["small"].training  # each model's mode is restored


class _Fixed(nn.Module):
    """A model called with no inputs: forwards its own tensor (so both models share one ``inputs``)."""

    def __init__(self, model: nn.Module, x: torch.Tensor) -> None:
        super().__init__()
        self.model, self.x = model, x

    def forward(self):
        return self.model(self.x)

    def train(self, mode: bool = True):
        self.model.train(mode)
        return super().train(mode)

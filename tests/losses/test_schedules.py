"""Tests for distill/losses/schedules.py and scheduled LossMix weights."""

import math

import pytest

from distill.losses import HardLabelCE, LossMix, Schedule, SoftTargetKL


def test_schedule_values():
    assert Schedule("constant", 0.3)(0.7) == 0.3
    assert Schedule("linear", 0.0, 1.0)(0.25) == pytest.approx(0.25)
    cosine = Schedule("cosine", 8.0, 1.0)
    assert cosine(0.0) == pytest.approx(8.0) and cosine(1.0) == pytest.approx(1.0)
    assert cosine(0.5) == pytest.approx(4.5)
    assert cosine(0.25) == pytest.approx(1 + 7 * (1 + math.cos(math.pi / 4)) / 2)
    step = Schedule("step", 1.0, milestones=[0.5, 0.8], values=[0.5, 0.1])
    assert [step(p) for p in (0.0, 0.49, 0.5, 0.9, 2.0)] == [1.0, 1.0, 0.5, 0.1, 0.1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"kind": "exp"}, "not one of"), ({"kind": "linear"}, "needs `end`"),
     ({"kind": "step", "milestones": [0.5]}, "equal, non-zero length"),
     ({"kind": "step", "milestones": [0.8, 0.2], "values": [1, 2]}, "must rise")],
)
def test_bad_schedules(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Schedule(**kwargs)


def test_loss_mix_applies_weight_and_temperature_schedules():
    mix = LossMix(
        {"kd": {"weight": 0.0, "loss": SoftTargetKL()}, "ce": {"weight": 1.0, "loss": HardLabelCE()}},
        temperature=4.0,
        schedules={"kd": {"kind": "linear", "start": 0.0, "end": 1.0}, "temperature": {"kind": "linear", "start": 4.0, "end": 1.0}},
    )
    assert "kd" in mix.terms  # kept although it starts at 0: it is scheduled
    assert mix.set_progress(0.5) == {"kd": 0.5, "temperature": 2.5}
    assert mix.weights["kd"] == 0.5 and mix.terms["kd"].temperature == 2.5
    with pytest.raises(ValueError, match=r"loss.schedules: \['cos'\] name no active term"):
        LossMix({"ce": {"weight": 1.0, "loss": HardLabelCE()}}, schedules={"cos": {"kind": "constant"}})
    with pytest.raises(ValueError, match="loss.schedules.ce: kind='linear' needs `end`"):
        LossMix({"ce": {"weight": 1.0, "loss": HardLabelCE()}}, schedules={"ce": {"kind": "linear"}})

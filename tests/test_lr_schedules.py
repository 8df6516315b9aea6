"""Learning-rate schedules that start over (LR rewinding): each segment runs the run's schedule as
if it were the whole run; a checkpointed scheduler resumes at the same rate."""

from __future__ import annotations

import io

import pytest
import torch
from transformers import get_scheduler

from distill.errors import ConfigError
from distill.lr_schedules import restart_segments, restarted_scheduler

LINEAR = lambda **kwargs: get_scheduler("linear", **kwargs)  # noqa: E731 - the run's `scheduler` node


def _optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


def _rates(scheduler, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return rates


def test_segments_split_the_run_at_the_restarts_inside_it():
    assert restart_segments(100, [40]) == [(0, 40), (40, 60)]
    assert restart_segments(100, [70, 40, 40]) == [(0, 40), (40, 30), (70, 30)]
    assert restart_segments(100, [0, 100, 150]) == [(0, 100)]


def test_each_segment_warms_up_and_decays_as_a_run_of_its_length():
    # 100 steps, warm-up 10%, restart at 40: [0, 40) warms up over 4 steps and decays to 0 at 40;
    # [40, 100) warms up over 6 steps (from 0 again) and decays to 0 at 100.
    rates = _rates(restarted_scheduler(LINEAR, _optimizer(2.0), 0.1, 100, [40]), 100)
    expected = {0: 0.0, 2: 1.0, 4: 2.0, 22: 2.0 * 18 / 36, 39: 2.0 * 1 / 36,
                40: 0.0, 43: 1.0, 46: 2.0, 73: 2.0 * 27 / 54, 99: 2.0 * 1 / 54}
    for step, rate in expected.items():
        assert rates[step] == pytest.approx(rate), step
    assert max(rates) == pytest.approx(2.0)  # the peak is the run's rate: nothing is raised, only moved


def test_no_restart_inside_the_run_is_the_run_s_own_schedule():
    plain = LINEAR(optimizer=_optimizer(), num_warmup_steps=10, num_training_steps=100)
    assert _rates(restarted_scheduler(LINEAR, _optimizer(), 0.1, 100, [0, 100]), 100) == pytest.approx(_rates(plain, 100))


def test_a_saved_scheduler_loads_with_weights_only_and_continues_at_the_same_rate():
    scheduler = restarted_scheduler(LINEAR, _optimizer(), 0.1, 100, [40])
    _rates(scheduler, 45)
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    resumed = restarted_scheduler(LINEAR, _optimizer(), 0.1, 100, [40])
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert _rates(resumed, 20) == pytest.approx(_rates(scheduler, 20))


def test_a_schedule_that_is_not_one_function_of_the_step_is_refused_naming_the_field():
    def step_decay(optimizer, num_warmup_steps, num_training_steps):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=10)

    with pytest.raises(ConfigError, match="scheduler: restart_schedule needs a schedule given as one function"):
        restarted_scheduler(step_decay, _optimizer(), 0.1, 100, [40])

"""The sparsity schedules: Zhu & Gupta's cubic hits its target at end_step and never decreases;
one-shot and after-training prune when they say."""

from __future__ import annotations

import pytest

from distill.pruning.schedule import SparsitySchedule, cubic_sparsity


def test_the_cubic_schedule_starts_at_the_initial_sparsity_ends_at_the_target_and_is_monotone():
    values = [cubic_sparsity(step, 0.1, 0.7, 30, 200) for step in range(0, 260)]
    assert values[0] == pytest.approx(0.1) and values[30] == pytest.approx(0.1)
    assert values[200] == pytest.approx(0.7) and values[259] == pytest.approx(0.7)
    assert all(later >= earlier for earlier, later in zip(values, values[1:]))
    # Zhu & Gupta's formula at the midpoint: s_f + (s_i - s_f)(1 - 1/2)^3.
    assert cubic_sparsity(115, 0.1, 0.7, 30, 200) == pytest.approx(0.7 + (0.1 - 0.7) * 0.5**3)


def test_gradual_masks_update_every_few_steps_and_once_more_at_the_end_step():
    schedule = SparsitySchedule("gradual", 0.7, start_step=30, end_step=95, every=20)
    assert [step for step in range(120) if schedule.updates_at(step)] == [30, 50, 70, 90, 95]
    assert schedule.target(29) == 0.0 and schedule.target(95) == pytest.approx(0.7)


def test_one_shot_prunes_once_and_after_training_never_during_training():
    one_shot = SparsitySchedule("one_shot", 0.5, start_step=100)
    assert [step for step in range(300) if one_shot.updates_at(step)] == [100]
    assert one_shot.target(99) == 0.0 and one_shot.target(100) == 0.5
    after = SparsitySchedule("after_training", 0.5)
    assert not any(after.updates_at(step) or after.pending(step, None) for step in range(300))


def test_a_resumed_run_catches_up_on_an_update_it_skipped():
    schedule = SparsitySchedule("gradual", 0.7, start_step=0, end_step=100, every=10)
    assert schedule.pending(0, None) and not schedule.pending(5, 0)
    assert schedule.pending(12, 0)  # step 10's update was missed
    assert not schedule.pending(12, 10) and not schedule.pending(10, 10)

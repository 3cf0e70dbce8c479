"""Where the judge points relative to the true earliest wrong step, counted by hand."""

from __future__ import annotations

import pytest

from quantmedic.judge.metrics import localization


def test_mixed_fixture_by_hand():
    loc = localization([
        (3, 3),      # exact, offset 0
        (5, 5),      # exact, offset 0
        (3, 1),      # too early, offset -2
        (4, 0),      # too early, offset -4
        (2, 5),      # too late, offset +3
        (0, 1),      # too late, offset +1
        (4, -1),     # missed
        (1, None),   # unscored
        (-1, 2),     # false alarm at step 2
        (-1, 2),     # false alarm at step 2
        (-1, 0),     # false alarm at step 0
        (-1, -1),    # right: no error
        (-1, None),  # unscored, no error
    ])
    assert (loc.n_error, loc.exact, loc.too_early, loc.too_late, loc.missed, loc.unscored) == (8, 2, 2, 2, 1, 1)
    assert loc.offsets == {-4: 1, -2: 1, 0: 2, 1: 1, 3: 1}
    assert list(loc.offsets) == sorted(loc.offsets)
    # off-target |offsets|: 2, 4, 3, 1 -> mean 10/4
    assert loc.mean_abs_offset == pytest.approx(2.5)
    assert (loc.n_correct, loc.false_alarms, loc.correct_unscored) == (5, 3, 1)
    assert loc.false_alarm_steps == {0: 1, 2: 2}


def test_all_exact_has_no_mean_offset():
    loc = localization([(0, 0), (2, 2)])
    assert (loc.exact, loc.offsets, loc.mean_abs_offset) == (2, {0: 2}, None)
    assert (loc.n_correct, loc.false_alarms, loc.false_alarm_steps) == (0, 0, {})


def test_missed_and_unscored_are_not_offsets():
    loc = localization([(1, -1), (2, None)])
    assert (loc.missed, loc.unscored, loc.offsets, loc.mean_abs_offset) == (1, 1, {}, None)


def test_empty():
    loc = localization([])
    assert (loc.n_error, loc.n_correct, loc.offsets, loc.false_alarm_steps, loc.mean_abs_offset) == (0, 0, {}, {}, None)


def test_counts_partition_the_error_subset():
    loc = localization([(i % 5, (i * 7) % 6 - 1) for i in range(60)] + [(1, None)] * 3)
    assert loc.exact + loc.too_early + loc.too_late + loc.missed + loc.unscored == loc.n_error
    assert sum(loc.offsets.values()) == loc.exact + loc.too_early + loc.too_late


def test_invalid_steps_are_refused():
    with pytest.raises(ValueError):
        localization([(-2, 0)])

"""Reliability table and expected calibration error, against a hand-computed fixture."""

from __future__ import annotations

import pytest

from quantmedic.judge.metrics import CalibrationBin, expected_calibration_error, reliability_table

CONF = [0.05, 0.15, 0.15, 0.5, 0.95, 1.0]
CORRECT = [1, 0, 1, True, 1, False]


def test_four_bins_by_hand():
    table = reliability_table(CONF, CORRECT, n_bins=4)
    # [0, .25): 0.05 0.15 0.15 -> mean 0.35/3, accuracy 2/3; [.25, .5): empty
    # [.5, .75): 0.5 -> accuracy 1; [.75, 1]: 0.95 and 1.0 (1.0 goes in the last bin) -> 0.975, 0.5
    assert [(b.lower, b.upper, b.count) for b in table] == [(0.0, 0.25, 3), (0.25, 0.5, 0), (0.5, 0.75, 1), (0.75, 1.0, 2)]
    assert table[0].mean_confidence == pytest.approx(0.35 / 3) and table[0].accuracy == pytest.approx(2 / 3)
    assert table[1] == CalibrationBin(0.25, 0.5, 0, None, None)
    assert (table[2].mean_confidence, table[2].accuracy) == (0.5, 1.0)
    assert table[3].mean_confidence == pytest.approx(0.975) and table[3].accuracy == 0.5
    # ECE = 3/6*|2/3 - 0.35/3| + 1/6*|1 - 0.5| + 2/6*|0.5 - 0.975| = 0.275 + 0.083333 + 0.158333
    assert expected_calibration_error(CONF, CORRECT, n_bins=4) == pytest.approx(0.516667, abs=1e-6)


def test_bin_edges_follow_the_stated_bounds():
    for n_bins in (3, 7, 10, 100):
        for i in range(n_bins + 1):
            table = reliability_table([i / n_bins], [1], n_bins)
            assert table[min(i, n_bins - 1)].count == 1
    tenth = reliability_table([0.3, 0.7, 0.29999], [1, 1, 1])
    assert [b.count for b in tenth] == [0, 0, 1, 1, 0, 0, 0, 1, 0, 0]


def test_perfect_and_worst_calibration():
    assert expected_calibration_error([1.0, 1.0, 0.0], [1, 1, 0]) == 0.0
    assert expected_calibration_error([1.0, 0.0], [0, 1]) == 1.0


def test_empty_input():
    table = reliability_table([], [], n_bins=5)
    assert len(table) == 5 and all(b.count == 0 and b.accuracy is None for b in table)
    assert expected_calibration_error([], []) is None


@pytest.mark.parametrize("conf,correct,n_bins", [([1.2], [1], 10), ([-0.1], [1], 10),
                                                 ([float("nan")], [1], 10), ([0.5], [1, 0], 10), ([0.5], [1], 0)])
def test_invalid_input(conf, correct, n_bins):
    with pytest.raises(ValueError):
        reliability_table(conf, correct, n_bins)

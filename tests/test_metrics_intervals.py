"""Wilson's score interval, plain and weighted (Kish's effective sample size)."""

from __future__ import annotations

import pytest

from quantmedic.judge.metrics import Interval, weighted_wilson_interval, wilson_interval


def test_wilson_8_of_10_by_hand():
    # z = 1.959964, z^2/n = 0.3841459; centre = (0.8 + 0.1920729) / 1.3841459 = 0.716743
    # half = 1.959964 / 1.3841459 * sqrt(0.8*0.2/10 + 0.3841459/40) = 1.416009 * 0.160011 = 0.226577
    i = wilson_interval(8, 10)
    assert (i.low, i.high, i.confidence) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4), 0.95)
    assert 0.8 in i


def test_wilson_extremes_and_levels():
    # 0/10: low = 0, high = (z^2/n) / (1 + z^2/n) = 0.3841459 / 1.3841459 = 0.277533
    zero = wilson_interval(0, 10)
    assert zero.low == 0.0 and zero.high == pytest.approx(0.277533, abs=1e-6)
    full = wilson_interval(10, 10)
    assert full.high == 1.0 and full.low == pytest.approx(1 - 0.277533, abs=1e-6)
    assert wilson_interval(8, 10, 0.99).width > wilson_interval(8, 10).width > wilson_interval(8, 10, 0.5).width
    assert wilson_interval(0, 0) is None


@pytest.mark.parametrize("args", [(11, 10), (-1, 10), (1, -1)])
def test_wilson_invalid_counts(args):
    with pytest.raises(ValueError):
        wilson_interval(*args)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.1])
def test_invalid_confidence(confidence):
    with pytest.raises(ValueError):
        wilson_interval(1, 2, confidence)


def test_weighted_equal_weights_is_wilson():
    outcomes = [1, 1, 1, 0, 1, 0, 1, 1, 1, 1]
    assert weighted_wilson_interval(outcomes, [3.0] * 10) == pytest.approx(wilson_interval(8, 10))
    assert weighted_wilson_interval([True, False], [1, 1]) == wilson_interval(1, 2)


def test_weighted_by_hand():
    # p = (1*1 + 1*0 + 2*1) / 4 = 0.75; n_eff = 4^2 / (1 + 1 + 4) = 8/3; z^2/n = 1.440547
    # centre = (0.75 + 0.720274) / 2.440547 = 0.602436
    # half = 1.959964 / 2.440547 * sqrt(0.75*0.25*3/8 + 1.440547*3/32) = 0.803083 * 0.453170 = 0.363931
    i = weighted_wilson_interval([1, 0, 1], [1, 1, 2])
    assert (i.low, i.high) == (pytest.approx(0.238505, abs=1e-5), pytest.approx(0.966367, abs=1e-5))
    # scaling every weight leaves p and n_eff unchanged
    assert weighted_wilson_interval([1, 0, 1], [10, 10, 20]) == pytest.approx(i)


def test_weighted_degenerate_and_invalid():
    assert weighted_wilson_interval([], []) is None
    assert weighted_wilson_interval([1, 0], [0, 0]) is None
    with pytest.raises(ValueError):
        weighted_wilson_interval([1, 0], [1, -1])
    with pytest.raises(ValueError):
        weighted_wilson_interval([1, 0], [1])
    with pytest.raises(ValueError):
        weighted_wilson_interval([2], [1])


def test_interval_helpers():
    i = Interval(0.25, 0.75, 0.9)
    assert i.width == 0.5 and 0.25 in i and 0.8 not in i

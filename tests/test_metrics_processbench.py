"""ProcessBench's error accuracy, correct accuracy and F1, against values computed by hand."""

from __future__ import annotations

import pytest

from quantmedic.judge.metrics import ProcessBenchScores, harmonic_f1, processbench_scores, subset_hits

# label = earliest wrong step (-1: no error); predicted = judge's step (-1: no error, None: unscored)
MIXED = [
    (2, 2),      # error subset: hit
    (1, 0),      # error subset: too early, miss
    (3, -1),     # error subset: missed, miss
    (0, None),   # error subset: unscored, miss
    (4, 4),      # error subset: hit
    (-1, -1),    # no-error subset: hit
    (-1, -1),    # no-error subset: hit
    (-1, 2),     # no-error subset: false alarm, miss
    (-1, None),  # no-error subset: unscored, miss
]


def test_mixed_fixture_by_hand():
    s = processbench_scores(MIXED)
    # error: 2 hits / 5 = 0.4; no-error: 2 hits / 4 = 0.5; f1 = 2*0.4*0.5/(0.4+0.5) = 0.4/0.9
    assert s.error_accuracy == pytest.approx(0.4)
    assert s.correct_accuracy == pytest.approx(0.5)
    assert s.f1 == pytest.approx(0.4 / 0.9)
    assert (s.n_error, s.n_correct, s.n_unscored) == (5, 4, 2)


def test_all_correct_and_all_wrong():
    assert processbench_scores([(1, 1), (0, 0), (-1, -1)]) == ProcessBenchScores(1.0, 1.0, 1.0, 2, 1, 0)
    # every prediction wrong: both accuracies 0, and f1 is 0 (not a division by zero)
    assert processbench_scores([(1, 2), (0, -1), (-1, 0)]) == ProcessBenchScores(0.0, 0.0, 0.0, 2, 1, 0)


def test_all_unscored_count_as_wrong():
    assert processbench_scores([(1, None), (-1, None)]) == ProcessBenchScores(0.0, 0.0, 0.0, 1, 1, 2)


def test_empty_subsets_give_none_not_zero():
    only_errors = processbench_scores([(1, 1), (2, 0)])
    assert (only_errors.error_accuracy, only_errors.correct_accuracy, only_errors.f1) == (0.5, None, None)
    only_correct = processbench_scores([(-1, -1)])
    assert (only_correct.error_accuracy, only_correct.correct_accuracy, only_correct.f1) == (None, 1.0, None)
    assert processbench_scores([]) == ProcessBenchScores(None, None, None, 0, 0, 0)


def test_accepts_a_generator_and_numpy_ints():
    np = pytest.importorskip("numpy")
    s = processbench_scores((np.int64(x), np.int64(y)) for x, y in [(1, 1), (-1, -1)])
    assert s.f1 == 1.0


@pytest.mark.parametrize("pair", [(-2, 0), (1, -3), (1.0, 1), (1, 0.5), (True, 1), ("1", 1)])
def test_invalid_steps_are_refused(pair):
    with pytest.raises(ValueError):
        processbench_scores([pair])


def test_harmonic_f1_and_subset_hits():
    assert harmonic_f1(0.5, 1.0) == pytest.approx(2 / 3)  # 2*0.5*1/(1.5)
    assert harmonic_f1(0.0, 0.0) == 0.0
    assert harmonic_f1(None, 1.0) is None
    assert subset_hits(MIXED) == ([True, False, False, False, True], [True, True, False, False], 2)

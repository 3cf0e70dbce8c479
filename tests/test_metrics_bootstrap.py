"""Percentile bootstrap intervals: determinism, coverage of the estimate, stratification, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from quantmedic.judge.metrics import (bootstrap_interval, percentile_interval, processbench_bootstrap,
                                      processbench_resamples, resample_indices, wilson_interval)


def _pairs(error_hits: int, n_error: int, correct_hits: int, n_correct: int) -> list:
    """Error samples with label 2 (hit: predicted 2, miss: predicted 0), then no-error samples."""
    return ([(2, 2)] * error_hits + [(2, 0)] * (n_error - error_hits)
            + [(-1, -1)] * correct_hits + [(-1, 3)] * (n_correct - correct_hits))


def test_deterministic_for_a_seed():
    pairs = _pairs(30, 50, 20, 40)
    assert processbench_bootstrap(pairs, seed=3) == processbench_bootstrap(pairs, seed=3)
    assert processbench_bootstrap(pairs, seed=3) != processbench_bootstrap(pairs, seed=4)
    values = np.arange(50) % 7
    one = bootstrap_interval(values, lambda x: x.mean(axis=1), vectorized=True, seed=11)
    assert one == bootstrap_interval(values, lambda x: x.mean(axis=1), vectorized=True, seed=11)


def test_interval_contains_point_estimate():
    b = processbench_bootstrap(_pairs(30, 50, 20, 40), n_resamples=1000, seed=1)
    # 30/50 = 0.6; 20/40 = 0.5; f1 = 2*0.6*0.5/1.1 = 0.545454...
    assert (b.scores.error_accuracy, b.scores.correct_accuracy) == (0.6, 0.5)
    assert b.scores.error_accuracy in b.error_accuracy
    assert b.scores.correct_accuracy in b.correct_accuracy
    assert b.scores.f1 == pytest.approx(0.6 / 1.1) and b.scores.f1 in b.f1
    assert 0.0 <= b.f1.low < b.f1.high <= 1.0 and b.n_resamples == 1000 and b.f1.confidence == 0.95


def test_narrows_with_more_data_and_lower_confidence():
    small = processbench_bootstrap(_pairs(30, 100, 50, 100))
    large = processbench_bootstrap(_pairs(300, 1000, 500, 1000))
    assert large.error_accuracy.width < small.error_accuracy.width / 2
    assert large.f1.width < small.f1.width / 2
    assert processbench_bootstrap(_pairs(30, 100, 50, 100), confidence=0.5).f1.width < small.f1.width


def test_stratification_keeps_a_lone_error_sample():
    # one error sample among 100: unstratified resampling would lose it in ~37% of resamples
    pairs = [(4, 4)] + [(-1, -1)] * 90 + [(-1, 1)] * 9
    samples = processbench_resamples(pairs, n_resamples=2000, seed=0)
    assert samples.error_accuracy.shape == (2000,) and np.isfinite(samples.error_accuracy).all()
    assert (samples.error_accuracy == 1.0).all()  # the lone sample is a hit in every resample
    assert np.isfinite(samples.f1).all()
    b = processbench_bootstrap(pairs)
    assert (b.error_accuracy.low, b.error_accuracy.high) == (1.0, 1.0)
    # the same through generic index resampling with strata
    strata = [label >= 0 for label, _ in pairs]
    rows = resample_indices(len(pairs), 2000, seed=0, strata=strata)
    assert (rows[:, 0] == 0).all() and not np.isin(rows[:, 1:], 0).any()
    unstratified = resample_indices(len(pairs), 2000, seed=0)
    assert not (unstratified == 0).any(axis=1).all()


def test_empty_subsets_give_no_interval():
    b = processbench_bootstrap(_pairs(3, 5, 0, 0))
    assert b.correct_accuracy is None and b.f1 is None and b.error_accuracy is not None
    empty = processbench_bootstrap([])
    assert (empty.error_accuracy, empty.correct_accuracy, empty.f1) == (None, None, None)
    assert processbench_resamples([]).f1 is None


def test_all_wrong_f1_is_zero_in_every_resample():
    samples = processbench_resamples(_pairs(0, 10, 0, 10), n_resamples=100)
    assert (samples.f1 == 0).all()


def test_unscored_counts_as_wrong_in_resamples():
    b = processbench_bootstrap([(1, None)] * 5 + [(-1, -1)] * 5)
    assert (b.error_accuracy.low, b.error_accuracy.high) == (0.0, 0.0) and b.scores.n_unscored == 5


def test_close_to_wilson_for_a_large_sample():
    # p = 0.3, n = 2000: bootstrap percentile and Wilson intervals agree to well within 0.02
    wilson = wilson_interval(600, 2000)
    b = processbench_bootstrap(_pairs(600, 2000, 1400, 2000), seed=5)
    assert b.error_accuracy.low == pytest.approx(wilson.low, abs=0.02)
    assert b.error_accuracy.high == pytest.approx(wilson.high, abs=0.02)
    values = np.array([1] * 600 + [0] * 1400)
    generic = bootstrap_interval(values, lambda x: x.mean(axis=1), vectorized=True, seed=5)
    assert generic.low == pytest.approx(wilson.low, abs=0.02)
    assert generic.high == pytest.approx(wilson.high, abs=0.02)


def test_generic_per_resample_statistic_and_undefined_resamples():
    items = [("a", 1.0), ("b", 0.0), ("a", 0.0), ("b", 1.0)] * 5

    def mean_of_a(sample):
        values = [v for k, v in sample if k == "a"]
        return sum(values) / len(values) if values else None

    i = bootstrap_interval(items, mean_of_a, n_resamples=300, seed=2)
    assert 0.0 <= i.low <= 0.5 <= i.high <= 1.0
    assert bootstrap_interval(items, lambda s: None, n_resamples=10) is None
    assert bootstrap_interval([], lambda s: 0.0) is None


def test_generic_vectorized_shape_is_checked():
    with pytest.raises(ValueError):
        bootstrap_interval([1.0, 2.0], lambda x: x, vectorized=True, n_resamples=5)
    with pytest.raises(ValueError):
        bootstrap_interval([1.0], lambda x: x.mean(axis=1), vectorized=True, n_resamples=0)


def test_percentile_interval():
    # 0..100: the 2.5th and 97.5th percentiles (linear interpolation) are 2.5 and 97.5
    i = percentile_interval(range(101))
    assert (i.low, i.high) == (pytest.approx(2.5), pytest.approx(97.5))
    assert percentile_interval([np.nan, 1.0, 1.0]) == percentile_interval([1.0, 1.0])
    assert percentile_interval([]) is None


def _best_time(f, repeats: int = 3) -> float:
    """The fastest of a few runs, so that a busy machine does not fail the test."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times)


def test_fast_enough():
    # 2000 resamples over 4000 items: well under a second (ProcessBench's path is O(n_resamples))
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 8, size=4000)
    predicted = np.where(rng.random(4000) < 0.6, labels, rng.integers(-1, 8, size=4000))
    pairs = list(zip(labels.tolist(), predicted.tolist()))
    assert _best_time(lambda: processbench_bootstrap(pairs, n_resamples=2000)) < 0.5
    hits, strata = (labels == predicted).astype(float), (labels >= 0).tolist()
    assert _best_time(lambda: bootstrap_interval(hits, lambda x: x.mean(axis=1), vectorized=True,
                                                 n_resamples=2000, strata=strata)) < 1.0

"""Percentile bootstrap confidence intervals, generic and for ProcessBench's metrics.

Every function takes ``seed`` (an int, or a ``numpy.random.Generator`` to continue) and gives the
same interval for the same seed. Resampling is stratified where asked: each stratum is resampled
with replacement within itself, at its own size, so no resample loses a stratum.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .intervals import Interval, check_confidence
from .processbench import ProcessBenchScores, processbench_scores, subset_hits

Seed = int | np.random.Generator | None


def percentile_interval(samples: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval | None:
    """The central ``confidence`` range of ``samples`` (non-finite ones dropped); None if none is left.

    >>> i = percentile_interval(range(101), 0.9)
    >>> round(i.low, 6), round(i.high, 6)
    (5.0, 95.0)
    """
    check_confidence(confidence)
    values = np.asarray(samples, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return Interval(float(low), float(high), confidence)


def _check_resamples(n_resamples: int) -> int:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    return int(n_resamples)


def resample_indices(n: int, n_resamples: int, seed: Seed = 0,
                     strata: Sequence[Hashable] | None = None) -> np.ndarray:
    """An ``(n_resamples, n)`` array of indices drawn with replacement from ``range(n)``.

    With ``strata`` (one label per item), column ``j`` only ever holds indices of items in item
    ``j``'s stratum, so every resample has each stratum at its original size.

    >>> rows = resample_indices(4, 3, seed=1, strata=["a", "a", "b", "b"])
    >>> bool(np.isin(rows[:, :2], [0, 1]).all() and np.isin(rows[:, 2:], [2, 3]).all())
    True
    """
    rng = np.random.default_rng(seed)
    n_resamples = _check_resamples(n_resamples)
    dtype = np.int32 if n < 2**31 else np.int64
    if strata is None:
        return rng.integers(0, n, size=(n_resamples, n), dtype=dtype)
    if len(strata) != n:
        raise ValueError(f"{len(strata)} strata labels for {n} items")
    groups: dict[Hashable, list[int]] = {}
    for position, label in enumerate(strata):
        groups.setdefault(label, []).append(position)
    if len(groups) == 1:
        return rng.integers(0, n, size=(n_resamples, n), dtype=dtype)
    # Filled item-major, then transposed: writing whole rows is much faster than scattering columns.
    out = np.empty((n, n_resamples), dtype=dtype)
    for members in groups.values():
        members_arr = np.asarray(members, dtype=dtype)
        out[members_arr] = members_arr[rng.integers(0, len(members), size=(len(members), n_resamples),
                                                    dtype=dtype)]
    return out.T


def bootstrap_interval(items: Sequence[Any] | np.ndarray, statistic: Callable[[Any], Any], *,
                       confidence: float = 0.95, n_resamples: int = 2000, seed: Seed = 0,
                       strata: Sequence[Hashable] | None = None,
                       vectorized: bool = False) -> Interval | None:
    """Percentile bootstrap interval of ``statistic`` over ``items``; None for no items.

    With ``vectorized=True``, ``items`` must be array-like and ``statistic`` gets all resamples
    at once as an array of shape ``(n_resamples, n, ...)`` and returns ``n_resamples`` values
    (e.g. ``lambda x: x.mean(axis=1)``): use this for speed. Otherwise it is called once per
    resample with a list of the resampled items. Resamples where the statistic is None or NaN
    are dropped; None when all are.

    >>> i = bootstrap_interval([0, 1] * 50, lambda x: x.mean(axis=1), vectorized=True)
    >>> 0.39 < i.low < 0.5 < i.high < 0.61
    True
    """
    check_confidence(confidence)
    n = len(items)
    if n == 0:
        return None
    indices = resample_indices(n, n_resamples, seed, strata)
    if vectorized:
        stats = np.asarray(statistic(np.asarray(items)[indices]), dtype=float)
        if stats.shape != (indices.shape[0],):
            raise ValueError(f"a vectorized statistic must return shape ({indices.shape[0]},), "
                             f"got {stats.shape}")
    else:
        stats = np.array([np.nan if (s := statistic([items[i] for i in row])) is None else float(s)
                          for row in indices.tolist()])
    return percentile_interval(stats, confidence)


@dataclass(frozen=True)
class ProcessBenchResamples:
    """The bootstrap distribution of each ProcessBench metric (None for an empty subset)."""

    error_accuracy: np.ndarray | None
    correct_accuracy: np.ndarray | None
    f1: np.ndarray | None


@dataclass(frozen=True)
class ProcessBenchIntervals:
    """Point estimates and percentile bootstrap intervals (None where the subset is empty)."""

    scores: ProcessBenchScores
    error_accuracy: Interval | None
    correct_accuracy: Interval | None
    f1: Interval | None
    n_resamples: int


def _resampled_accuracy(hits: list[bool], n_resamples: int, rng: np.random.Generator) -> np.ndarray | None:
    # Resampling n hits/misses with replacement, k of them hits, gives Binomial(n, k/n) hits:
    # the same distribution as resampling indices within the subset, drawn in O(n_resamples).
    if not hits:
        return None
    n = len(hits)
    return rng.binomial(n, sum(hits) / n, size=n_resamples) / n


def processbench_resamples(pairs: Iterable[tuple[int, int | None]], *, n_resamples: int = 2000,
                           seed: Seed = 0) -> ProcessBenchResamples:
    """Bootstrap distributions of the three metrics, stratified by subset.

    Error and no-error samples are resampled separately, each at its own size, so both subsets
    are present in every resample (one error sample among 100 still gives an error accuracy
    in every resample). Unscored predictions count as wrong, as in :func:`processbench_scores`.
    """
    n_resamples = _check_resamples(n_resamples)
    rng = np.random.default_rng(seed)
    error, correct, _ = subset_hits(pairs)
    error_acc = _resampled_accuracy(error, n_resamples, rng)
    correct_acc = _resampled_accuracy(correct, n_resamples, rng)
    f1 = None
    if error_acc is not None and correct_acc is not None:
        total = error_acc + correct_acc
        f1 = np.divide(2 * error_acc * correct_acc, total, out=np.zeros_like(total), where=total > 0)
    return ProcessBenchResamples(error_acc, correct_acc, f1)


def processbench_bootstrap(pairs: Iterable[tuple[int, int | None]], *, confidence: float = 0.95,
                           n_resamples: int = 2000, seed: Seed = 0) -> ProcessBenchIntervals:
    """ProcessBench's scores with stratified percentile bootstrap intervals.

    >>> b = processbench_bootstrap([(0, 0), (1, 1), (2, 0), (-1, -1), (-1, 3)], seed=7)
    >>> b.scores.error_accuracy, b.error_accuracy.low <= 2 / 3 <= b.error_accuracy.high
    (0.6666666666666666, True)
    """
    check_confidence(confidence)
    pairs = list(pairs)
    samples = processbench_resamples(pairs, n_resamples=n_resamples, seed=seed)

    def interval(values: np.ndarray | None) -> Interval | None:
        return None if values is None else percentile_interval(values, confidence)

    return ProcessBenchIntervals(processbench_scores(pairs), interval(samples.error_accuracy),
                                 interval(samples.correct_accuracy), interval(samples.f1),
                                 n_resamples)

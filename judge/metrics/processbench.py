"""ProcessBench's metrics for locating the earliest wrong step of a solution.

A sample is a ``(label, predicted)`` pair: ``label`` is the 0-based index of the earliest wrong
step, or -1 when the solution has no error; ``predicted`` is the judge's index (-1 = "no error"),
or None when the judge gave no valid answer. An unscored sample counts as wrong in its subset, as
ProcessBench counts unparsable outputs, and is also counted in ``n_unscored``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ._steps import check_pair


@dataclass(frozen=True)
class ProcessBenchScores:
    """Accuracy on the samples with an error, on those without, and their harmonic mean.

    An accuracy over an empty subset is None, and so is ``f1`` when either accuracy is None.
    """

    error_accuracy: float | None
    correct_accuracy: float | None
    f1: float | None
    n_error: int
    n_correct: int
    n_unscored: int


def harmonic_f1(error_accuracy: float | None, correct_accuracy: float | None) -> float | None:
    """The harmonic mean of the two accuracies: 0 when both are 0, None when either is None.

    >>> harmonic_f1(0.5, 1.0)
    0.6666666666666666
    """
    if error_accuracy is None or correct_accuracy is None:
        return None
    total = error_accuracy + correct_accuracy
    return 0.0 if total == 0 else 2 * error_accuracy * correct_accuracy / total


def subset_hits(pairs: Iterable[tuple[int, int | None]]) -> tuple[list[bool], list[bool], int]:
    """Per-sample hits on the error subset and on the no-error subset, and the unscored count.

    >>> subset_hits([(2, 2), (1, 0), (-1, -1), (-1, None)])
    ([True, False], [True, False], 1)
    """
    error: list[bool] = []
    correct: list[bool] = []
    unscored = 0
    for pair in pairs:
        label, predicted = check_pair(pair)
        unscored += predicted is None
        (correct if label == -1 else error).append(predicted == label)
    return error, correct, unscored


def processbench_scores(pairs: Iterable[tuple[int, int | None]]) -> ProcessBenchScores:
    """ProcessBench's error accuracy, correct accuracy and F1 over ``(label, predicted)`` pairs.

    >>> s = processbench_scores([(2, 2), (1, 0), (-1, -1), (-1, None)])
    >>> s.error_accuracy, s.correct_accuracy, s.f1, s.n_unscored
    (0.5, 0.5, 0.5, 1)
    """
    error, correct, unscored = subset_hits(pairs)
    error_accuracy = sum(error) / len(error) if error else None
    correct_accuracy = sum(correct) / len(correct) if correct else None
    return ProcessBenchScores(error_accuracy, correct_accuracy,
                              harmonic_f1(error_accuracy, correct_accuracy),
                              len(error), len(correct), unscored)

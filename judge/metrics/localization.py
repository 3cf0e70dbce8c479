"""Where the judge points relative to the true earliest wrong step.

Over samples with an error (label >= 0), each prediction is exactly one of: ``exact``,
``too_early`` (0 <= predicted < label), ``too_late`` (predicted > label), ``missed``
(predicted == -1) or ``unscored`` (None). Over samples without an error (label == -1), a
prediction >= 0 is a false alarm.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from ._steps import check_pair


@dataclass(frozen=True)
class Localization:
    """Counts of where predictions fall, with histograms as ``{value: count}`` sorted by value.

    ``offsets`` holds ``predicted - label`` for error samples with a predicted step (>= 0), exact
    ones included (offset 0); ``mean_abs_offset`` averages ``|predicted - label|`` over those
    that are not exact (None when there are none). ``false_alarm_steps`` holds the step a false
    alarm points at; ``correct_unscored`` counts unscored samples without an error.
    """

    n_error: int
    exact: int
    too_early: int
    too_late: int
    missed: int
    unscored: int
    offsets: dict[int, int]
    mean_abs_offset: float | None
    n_correct: int
    false_alarms: int
    false_alarm_steps: dict[int, int]
    correct_unscored: int


def localization(pairs: Iterable[tuple[int, int | None]]) -> Localization:
    """Tally ``(label, predicted)`` pairs by where the prediction falls.

    >>> loc = localization([(3, 3), (3, 1), (2, 5), (4, -1), (1, None), (-1, 2), (-1, -1)])
    >>> loc.exact, loc.too_early, loc.too_late, loc.missed, loc.unscored, loc.offsets
    (1, 1, 1, 1, 1, {-2: 1, 0: 1, 3: 1})
    >>> loc.mean_abs_offset, loc.false_alarms, loc.false_alarm_steps
    (2.5, 1, {2: 1})
    """
    kinds: Counter = Counter()
    offsets: Counter = Counter()
    alarms: Counter = Counter()
    n_error = n_correct = correct_unscored = 0
    for pair in pairs:
        label, predicted = check_pair(pair)
        if label == -1:
            n_correct += 1
            if predicted is None:
                correct_unscored += 1
            elif predicted >= 0:
                alarms[predicted] += 1
            continue
        n_error += 1
        if predicted is None:
            kinds["unscored"] += 1
        elif predicted == -1:
            kinds["missed"] += 1
        else:
            offsets[predicted - label] += 1
            kinds["exact" if predicted == label else "too_early" if predicted < label else "too_late"] += 1
    off_target = [(abs(o), c) for o, c in offsets.items() if o != 0]
    n_off = sum(c for _, c in off_target)
    return Localization(
        n_error=n_error, exact=kinds["exact"], too_early=kinds["too_early"],
        too_late=kinds["too_late"], missed=kinds["missed"], unscored=kinds["unscored"],
        offsets=dict(sorted(offsets.items())),
        mean_abs_offset=sum(o * c for o, c in off_target) / n_off if n_off else None,
        n_correct=n_correct, false_alarms=sum(alarms.values()),
        false_alarm_steps=dict(sorted(alarms.items())), correct_unscored=correct_unscored)

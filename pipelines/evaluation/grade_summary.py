"""Grading summaries: counts per model label with the accuracy's 95% Wilson interval, and how often the
grader agrees with given ``correct`` labels; each in one pass over any iterable of attempts, keeping counts
(and the disagreements) only."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from quantmedic.judge.metrics import Interval, wilson_interval
from quantmedic.taxonomy.records import Attempt

UNGRADABLE = "ungradable"  # how the grading note of an attempt that could not be graded starts


def attempt_label(attempt: Attempt) -> str:
    """The model and its quantization, for tables: ``qwen [awq 4-bit]``."""
    q = attempt.quantization
    if q is None or q.method.lower() in ("none", "fp", "bf16", "fp16"):
        return attempt.model
    return f"{attempt.model} [{q.method}{f' {q.bits}-bit' if q.bits else ''}]"


@dataclass(frozen=True)
class GradingSummary:
    """Counts of one group of graded attempts, with the accuracy over the gradable ones."""

    label: str
    total: int
    correct: int
    wrong: int
    ungradable: int
    ungradable_reasons: tuple[tuple[str, int], ...]

    @property
    def accuracy(self) -> float | None:
        graded = self.correct + self.wrong
        return self.correct / graded if graded else None

    @property
    def interval(self) -> Interval | None:
        return wilson_interval(self.correct, self.correct + self.wrong)


def summarize(graded: Iterable[Attempt]) -> list[GradingSummary]:
    """One summary per model label, in order of appearance, then ``all`` when there are several (one pass
    over any iterable, keeping counts only)."""
    groups: dict[str, Counter] = {}
    everything: Counter = Counter()
    for attempt in graded:
        outcome = attempt.correct if attempt.correct is not None else (attempt.grading or UNGRADABLE)
        groups.setdefault(attempt_label(attempt), Counter())[outcome] += 1
        everything[outcome] += 1
    if len(groups) > 1:
        groups["all"] = everything

    def one(label: str, counts: Counter) -> GradingSummary:
        reasons = Counter({k: n for k, n in counts.items() if not isinstance(k, bool)})
        return GradingSummary(label, sum(counts.values()), counts[True], counts[False], sum(reasons.values()),
                              tuple(reasons.most_common()))

    return [one(label, counts) for label, counts in groups.items()]


@dataclass(frozen=True)
class Disagreement:
    """One attempt where the grader and the given label differ."""

    attempt_id: str
    source_id: str | None
    model: str
    expected: bool | None
    got: bool | None
    final_answer: str | None
    reference_answer: str | None
    grading: str | None
    labelled_by: str | None = None  # how the given label was decided (the input's grading), if it says


@dataclass(frozen=True)
class Agreement:
    """How often the grader agrees with given ``correct`` labels."""

    total: int
    agreeing: int
    disagreements: tuple[Disagreement, ...]

    @property
    def rate(self) -> float:
        return self.agreeing / self.total if self.total else 0.0

    @property
    def interval(self) -> Interval | None:
        """The agreement's 95% Wilson interval (None with no labelled attempt)."""
        return wilson_interval(self.agreeing, self.total)


def agreement(labelled: Sequence[Attempt], graded: Sequence[Attempt]) -> Agreement:
    """Compare given labels with the grader's, attempt by attempt (same order, same ids).

    An ungradable attempt (``correct`` None) counts as a disagreement; unlabelled ones are skipped.
    """
    if len(labelled) != len(graded):
        raise ValueError(f"{len(labelled)} labelled attempts but {len(graded)} graded ones")
    return agreement_of(zip(labelled, graded))


def agreement_of(pairs: Iterable[tuple[Attempt, Attempt]]) -> Agreement:
    """:func:`agreement` over ``(labelled, graded)`` pairs of the same attempt, in one pass."""
    disagreements, total = [], 0
    for given, ours in pairs:
        if given.id != ours.id:
            raise ValueError(f"attempt {given.id} was paired with {ours.id}")
        if given.correct is None:
            continue
        total += 1
        if ours.correct != given.correct:
            disagreements.append(Disagreement(ours.id, ours.problem.source_id, ours.model, given.correct,
                                              ours.correct, ours.final_answer, ours.problem.reference_answer,
                                              ours.grading, given.grading))
    return Agreement(total, total - len(disagreements), tuple(disagreements))

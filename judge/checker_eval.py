"""How well the deterministic step checker (:mod:`quantmedic.judge.checker`) does against labels: pure.

An attempt is *erroneous* when its human first-error label is a step (``label >= 0``) or, with no label, its final
answer is graded wrong (``correct is False``); it is *correct* when ``label == -1`` or, with no label,
``correct is True``; otherwise it is not counted. The checker *fires* when it finds a false claim
(:attr:`~quantmedic.judge.checker.CheckedAttempt.checked_error` is not None).

On the labelled erroneous attempts where it fires, the checked error (1-based) is compared with the label (0-based):
``checked_error - 1 == label`` is *exact*, ``>=`` is *at or after* (target >= 97%: a false claim after the first
wrong step is still a real error downstream of it), ``<`` is *before* (the checker fired on a step the human
judged right: a false fire, or a label that missed it). A fire on a correct attempt is a *false fire* (target <= 1%;
with outcome-only labels such as ``correct`` it may also be a real slip that did not change the final answer).
Every rate comes with Wilson's 95% score interval (:func:`~quantmedic.judge.metrics.intervals.wilson_interval`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from quantmedic.taxonomy.records import Attempt

from .checker import CheckedAttempt, Finding, check_steps
from .metrics.intervals import wilson_interval

AT_OR_AFTER_TARGET = 0.97
FALSE_FIRE_TARGET = 0.01


class Rate(BaseModel):
    """``hits`` out of ``n``, with Wilson's 95% interval (all None when ``n == 0``)."""
    model_config = ConfigDict(frozen=True, extra="forbid")

    hits: int = Field(ge=0)
    n: int = Field(ge=0)
    value: float | None = None
    low: float | None = None
    high: float | None = None

    @classmethod
    def of(cls, hits: int, n: int) -> "Rate":
        interval = wilson_interval(hits, n)
        if interval is None:
            return cls(hits=hits, n=n)
        return cls(hits=hits, n=n, value=hits / n, low=interval.low, high=interval.high)

    def text(self) -> str:
        """``12/14 = 85.7% [60.1, 96.0]`` (percentages), or ``0/0`` when there is nothing to count."""
        if self.value is None:
            return "0/0"
        return f"{self.hits}/{self.n} = {100 * self.value:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}]"


class Misfire(BaseModel):
    """A fire that disagrees with the label: before the labelled first error, or on a correct attempt."""
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["before_label", "on_correct"]
    attempt_id: str
    item: str = Field(description="The problem's id in its source, or the attempt's id.")
    label: int | None = Field(description="The human first-error label (0-based; -1: none), if any.")
    checked_error: int = Field(ge=1, description="The checker's first step with a false claim (1-based).")
    finding: Finding
    text: str = Field(description="The checked step's text.")

    def claim(self) -> str:
        f = self.finding
        return f"{f.expression} {f.relation} {f.claimed} (true: {f.true})"


class CheckerEvaluation(BaseModel):
    """The checker against the labels of some attempts: see the module docstring."""
    model_config = ConfigDict(frozen=True, extra="forbid")

    attempts: int = Field(description="All attempts given, counted or not.")
    erroneous: int = Field(description="Attempts with an error (label >= 0, or correct is False with no label).")
    correct: int = Field(description="Attempts without one (label == -1, or correct is True with no label).")
    fires_on_erroneous: Rate
    fires_on_correct: Rate = Field(description="The false-fire rate (target <= 1%).")
    exact: Rate = Field(description="Of labelled erroneous attempts where it fires: checked error == label.")
    at_or_after: Rate = Field(description="Of the same: checked error at or after the label (target >= 97%).")
    before: Rate = Field(description="Of the same: checked error before the label (a false fire or a label miss).")
    misfires: tuple[Misfire, ...] = ()

    @property
    def meets_targets(self) -> bool | None:
        """Both targets met (None while either rate has nothing to count)."""
        if self.at_or_after.value is None or self.fires_on_correct.value is None:
            return None
        return self.at_or_after.value >= AT_OR_AFTER_TARGET and self.fires_on_correct.value <= FALSE_FIRE_TARGET


def is_erroneous(attempt: Attempt) -> bool | None:
    """True (an error), False (none) or None (unlabelled): the human label first, else the graded answer."""
    if attempt.label is not None:
        return attempt.label >= 0
    return None if attempt.correct is None else not attempt.correct


def _misfire(kind: str, attempt: Attempt, checked: CheckedAttempt) -> Misfire:
    step = checked.checked_error
    return Misfire(kind=kind, attempt_id=attempt.id, item=attempt.problem.source_id or attempt.id,
                   label=attempt.label, checked_error=step, finding=checked.findings[0], text=attempt.steps[step - 1])


def score_checked(pairs: Iterable[tuple[Attempt, CheckedAttempt]]) -> CheckerEvaluation:
    """Score checker results already computed, one per attempt."""
    n = erroneous = correct = fired_error = fired_correct = 0
    exact = after = before = 0
    misfires: list[Misfire] = []
    for attempt, checked in pairs:
        n += 1
        wrong, fired = is_erroneous(attempt), checked.checked_error is not None
        erroneous += wrong is True
        correct += wrong is False
        fired_error += fired and wrong is True
        fired_correct += fired and wrong is False
        if fired and wrong is False:
            misfires.append(_misfire("on_correct", attempt, checked))
        elif fired and wrong and attempt.label is not None:
            offset = checked.checked_error - 1 - attempt.label  # 1-based step against a 0-based label
            exact += offset == 0
            after += offset >= 0
            before += offset < 0
            if offset < 0:
                misfires.append(_misfire("before_label", attempt, checked))
    fired_labelled = after + before
    return CheckerEvaluation(attempts=n, erroneous=erroneous, correct=correct,
                             fires_on_erroneous=Rate.of(fired_error, erroneous),
                             fires_on_correct=Rate.of(fired_correct, correct),
                             exact=Rate.of(exact, fired_labelled), at_or_after=Rate.of(after, fired_labelled),
                             before=Rate.of(before, fired_labelled), misfires=tuple(misfires))


def evaluate_checker(attempts: Sequence[Attempt]) -> CheckerEvaluation:
    """Check every attempt's steps and score the results against the attempts' labels."""
    return score_checked((a, check_steps(a.id, a.steps)) for a in attempts)


def checker_rows(evaluation: CheckerEvaluation) -> list[tuple[str, str]]:
    """The evaluation as (measure, value) rows, for a table."""
    e = evaluation
    return [("attempts (with an error / without)", f"{e.attempts} ({e.erroneous} / {e.correct})"),
            ("fires on erroneous", e.fires_on_erroneous.text()),
            ("false fires on correct (target <= 1%)", e.fires_on_correct.text()),
            ("labelled fires: exact step", e.exact.text()),
            ("labelled fires: at or after the label (target >= 97%)", e.at_or_after.text()),
            ("labelled fires: before the label", e.before.text())]


def to_markdown(evaluation: CheckerEvaluation, title: str = "Step checker", max_misfires: int = 20) -> str:
    """A Markdown section: the rates with their 95% Wilson intervals, then (the first) misfires' claims."""
    lines = [f"## {title}", "",
             "The deterministic step checker's first false claim against the labels (95% Wilson intervals).", "",
             "| measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in checker_rows(evaluation))]
    shown = evaluation.misfires[:max_misfires]
    if shown:
        lines += ["", "| misfire | item | label (0-based) | checked step (1-based) | claim |",
                  "|---|---|---:|---:|---|"]
        lines += [f"| {m.kind} | {m.item} | {m.label if m.label is not None else '–'} | {m.checked_error} | "
                  f"`{m.claim()}` |" for m in shown]
    if len(evaluation.misfires) > len(shown):
        lines += ["", f"… and {len(evaluation.misfires) - len(shown)} more misfires (all in metrics.json)."]
    return "\n".join(lines) + "\n"


def to_json(evaluation: CheckerEvaluation) -> dict:
    """The evaluation as plain JSON (the ``checker`` key of ``metrics.json``)."""
    document = evaluation.model_dump(mode="json")
    document["meets_targets"] = evaluation.meets_targets
    return document


def from_json(document: dict) -> CheckerEvaluation:
    """The evaluation back from :func:`to_json`'s document."""
    return CheckerEvaluation.model_validate({k: v for k, v in document.items() if k != "meets_targets"})

"""The diagnosis each selected failure is treated for: the judge's, or the humans' where they reviewed it.

Only scored verdicts are diagnoses. When reviews are given, only reviewed verdicts count: a verdict
that its reviewers accept keeps the judge's answer, one they correct takes theirs (corrections
win), and one whose reviewers disagree with each other, or who say no step is wrong, is left out.

A verdict whose LLM judge conflicts with the step checker (``conflict``: the judge puts the first
error after the checker's proven-false step, or finds none) is never treated on the judge's word: without
reviews it is left out ("conflict with the step checker, not reviewed"); with reviews it is used only
as its reviewers accepted or corrected it, as every verdict then is.

A reasoning model's verdict judged over its thinking alone (``scope='thinking'``) has no first wrong
step: it is a diagnosis when it names a category and a first wrong section, and treats that category
(its pairs are whole traces, never step-level).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from quantmedic.taxonomy.model import NO_ERROR
from quantmedic.taxonomy.records import DiagnosisSource, Review, Verdict

Source = DiagnosisSource
CONFLICT_SKIP = "conflict with the step checker, not reviewed"


@dataclass(frozen=True)
class Diagnosis:
    """A failed attempt with the first wrong step (None: only its thinking was judged) and error category it
    is treated for."""

    verdict: Verdict
    first_wrong_step: int | None
    category: str
    subtype: str | None
    source: Source
    review_ids: tuple[str, ...] = ()

    @property
    def decided_by(self) -> str:
        """The layer that decided the verdict: judge, checker or rules (a human correction replaces it: see
        :attr:`checker_confirmed`)."""
        return self.verdict.decided_by

    @property
    def checker_confirmed(self) -> bool:
        """The step checker decided the diagnosis and no human replaced it with their own."""
        return self.verdict.decided_by == "checker" and self.source != "human-corrected"

    @property
    def attempt(self):
        return self.verdict.attempt

    @property
    def first_wrong_section(self) -> int | None:
        """The thinking's first wrong section (None: the thinking was not judged or none is wrong)."""
        section = self.verdict.first_wrong_section
        return None if section in (None, -1) else section


def _located(verdict: Verdict) -> bool:
    """Whether the verdict says where the attempt goes wrong: a solution step, or a section of the thinking."""
    return verdict.first_wrong_step not in (None, -1) or verdict.first_wrong_section not in (None, -1)


def _human_answer(review: Review) -> tuple[int | None, str | None, str | None]:
    """What one reviewer says is right: their own fields, or the judge's claim when they accept it."""
    if review.first_wrong_step is None and review.category is None:
        if review.judge_correct:
            return review.judge.first_wrong_step, review.judge.category, review.judge.subtype
        return None, None, None
    return review.first_wrong_step, review.category, review.subtype


def resolve(verdicts: Sequence[Verdict], reviews: Iterable[Review] | None = None) -> tuple[list[Diagnosis], Counter]:
    """The diagnoses to treat, and why each other verdict was left out (reason → count).

    >>> from quantmedic.taxonomy.records import Attempt, Problem
    >>> a = Attempt(problem=Problem(text="1+1?"), steps=("Step 1: 1+1=3",), correct=False)
    >>> v = Verdict(attempt=a, status="ok", first_wrong_step=0, category="execution",
    ...             subtype="computational_error", judge_model="j", taxonomy="t@1")
    >>> [d.source for d in resolve([v])[0]]
    ['judge']
    """
    by_verdict: dict[str, list[Review]] = defaultdict(list)
    for review in reviews or ():
        by_verdict[review.verdict_id].append(review)
    humans = reviews is not None
    kept: list[Diagnosis] = []
    skipped: Counter = Counter()
    for verdict in verdicts:
        if not verdict.is_diagnosis:
            skipped["unscored"] += 1
        elif verdict.category in (None, NO_ERROR) or not _located(verdict):
            skipped["judge found no wrong step"] += 1
        elif verdict.attempt.correct is not False:
            skipped["attempt is not graded wrong"] += 1
        elif not humans and verdict.conflict:
            skipped[CONFLICT_SKIP] += 1
        elif not humans:
            step = None if verdict.first_wrong_step == -1 else verdict.first_wrong_step
            kept.append(Diagnosis(verdict, step, verdict.category, verdict.subtype, "judge"))
        elif not by_verdict.get(verdict.id):
            skipped["not reviewed"] += 1
        else:
            diagnosis, reason = _from_reviews(verdict, by_verdict[verdict.id])
            if diagnosis is None:
                skipped[reason] += 1
            else:
                kept.append(diagnosis)
    return kept, skipped


def _from_reviews(verdict: Verdict, reviews: list[Review]) -> tuple[Diagnosis | None, str]:
    answers = Counter(_human_answer(r) for r in reviews)
    ranked = answers.most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None, "reviewers disagree"
    (step, category, subtype), _ = ranked[0]
    if subtype is None and category == verdict.category:
        subtype = verdict.subtype
    thinking_only = verdict.first_wrong_step is None and verdict.first_wrong_section not in (None, -1)
    if category is None or (step is None and not thinking_only):
        return None, "rejected by a reviewer without a correction"
    if step == -1 or category == NO_ERROR:
        return None, "reviewers found no wrong step"
    same = (step, category, subtype) == (verdict.first_wrong_step, verdict.category, verdict.subtype)
    source: Source = "human-accepted" if same else "human-corrected"
    return Diagnosis(verdict, step, category, subtype, source, tuple(sorted(r.id for r in reviews))), ""

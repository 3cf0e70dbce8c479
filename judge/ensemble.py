"""Combining several judges' answers about one attempt into one verdict, by majority."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from quantmedic.taxonomy.records import JudgeAnswer


@dataclass(frozen=True)
class Majority:
    """The majority answer and how many scored judges agree with it."""

    first_wrong_step: int
    category: str
    subtype: str
    confidence: float
    explanation: str
    raw_response: str | None
    agreement: float


def _winner(counts: Counter, weights: dict, prefer_low: bool = False):
    """Most votes; ties go to the larger summed confidence, then (if asked) the smaller value."""
    return max(counts, key=lambda v: (counts[v], weights[v], -v if prefer_low else 0))


def majority(answers: Sequence[JudgeAnswer]) -> Majority | None:
    """Vote on the step, then on the category among those agreeing, then on the subtype.

    Ties on the step go to the larger summed confidence, then to the earlier step. ``agreement`` is
    the share of scored answers with the majority's step and category. None when none is scored.
    """
    scored = [a for a in answers if a.status == "ok"]
    if not scored:
        return None

    def vote(pool, attribute, prefer_low=False):
        counts = Counter(getattr(a, attribute) for a in pool)
        weights: dict = {}
        for a in pool:
            weights[getattr(a, attribute)] = weights.get(getattr(a, attribute), 0.0) + (a.confidence or 0.0)
        return _winner(counts, weights, prefer_low)

    step = vote(scored, "first_wrong_step", prefer_low=True)
    pool = [a for a in scored if a.first_wrong_step == step]
    category = vote(pool, "category")
    pool = [a for a in pool if a.category == category]
    subtype = vote(pool, "subtype")
    best = max((a for a in pool if a.subtype == subtype), key=lambda a: a.confidence or 0.0)
    return Majority(step, category, subtype, sum(a.confidence or 0.0 for a in pool) / len(pool),
                    best.explanation or "", best.raw_response, len(pool) / len(scored))

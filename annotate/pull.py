"""``quantmedic annotate pull``: submitted Argilla responses → Review records, joined to verdicts.

Only submitted responses become reviews; drafts and discarded responses are counted and reported,
never mixed in. Each review carries the judge's claim it checked (from the verdicts file).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from quantmedic.taxonomy.records import JudgeClaim, Review, Verdict

from .connection import AnnotateError, ArgillaTarget, connect, find_dataset
from .settings import WEIGHT, quantization_label, step_from_label


@dataclass
class PullCounts:
    """What the dataset held: submitted responses per annotator, drafts, discarded, untouched records."""

    records: int = 0
    submitted: Counter = field(default_factory=Counter)
    drafts: int = 0
    discarded: int = 0
    without_response: int = 0


def _value(values: dict | None, question: str):
    entry = (values or {}).get(question)
    return entry.get("value") if isinstance(entry, dict) else None


def review_from(verdict: Verdict, annotator: str, values: dict, metadata: dict, attach: bool) -> Review:
    """A Review from one annotator's submitted answers to one verdict's record."""
    judge_correct = _value(values, "judge_correct")
    problem = verdict.attempt.problem
    return Review(
        verdict_id=verdict.id, annotator=annotator,
        judge_correct=None if judge_correct is None else judge_correct == "yes",
        first_wrong_step=step_from_label(_value(values, "first_wrong_step")),
        category=_value(values, "category"), subtype=_value(values, "subtype"),
        comment=_value(values, "comment") or None,
        judge=JudgeClaim(model=verdict.judge_model, first_wrong_step=verdict.first_wrong_step,
                         category=verdict.category, subtype=verdict.subtype, confidence=verdict.confidence),
        model=verdict.attempt.model, quantization=quantization_label(verdict),
        subject=problem.subject or problem.source, level=None if problem.level is None else str(problem.level),
        sampling_weight=float(metadata.get(WEIGHT) or 1.0), stratum=metadata.get("stratum"),
        verdict=verdict if attach else None)


def _records(client, dataset_id, page: int = 200) -> Iterator:
    offset = 0
    while True:
        batch = client.api.records.list(dataset_id, offset=offset, limit=page, with_suggestions=False,
                                        with_responses=True)
        yield from batch
        if len(batch) < page:
            return
        offset += page


def pull(target: ArgillaTarget, dataset_name: str, verdicts: Sequence[Verdict], *,
         attach_verdicts: bool = False) -> tuple[list[Review], PullCounts]:
    """Every submitted response of the dataset as a Review, in record order then annotator name."""
    client = connect(target)
    dataset = find_dataset(client, target, dataset_name)
    by_id = {v.id: v for v in verdicts}
    users = {u.id: u.username for u in client.api.users.list()}
    counts = PullCounts()
    reviews: list[Review] = []
    unknown = []
    for record in _records(client, dataset.id):
        counts.records += 1
        if not record.responses:
            counts.without_response += 1
            continue
        verdict = by_id.get(str(record.external_id))
        if verdict is None:
            unknown.append(str(record.external_id))
            continue
        metadata = record.metadata if isinstance(record.metadata, dict) else {}
        batch = []
        for response in record.responses:
            status = getattr(response.status, "value", response.status)
            if status == "draft":
                counts.drafts += 1
            elif status == "discarded":
                counts.discarded += 1
            elif status == "submitted":
                annotator = users.get(response.user_id, str(response.user_id))
                counts.submitted[annotator] += 1
                batch.append(review_from(verdict, annotator, response.values, metadata, attach_verdicts))
        reviews += sorted(batch, key=lambda r: r.annotator)
    if unknown:
        raise AnnotateError(f"{len(unknown)} responded records are not in the verdicts file (first: {unknown[0]}); "
                            "pass the verdicts file that was pushed to this dataset")
    return reviews, counts

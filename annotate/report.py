"""The diagnostic-accuracy report from human reviews: how often the judge was right, with intervals.

A verdict is *accepted* by an annotator when their first wrong step and category are the judge's.
Per verdict, the outcome is the share of its annotators who accept it; the diagnostic accuracy is
the weighted mean over verdicts (weights: inverse sampling probabilities, 1 when every verdict was
reviewed), with a 95% Wilson interval on Kish's effective sample size. All metrics come from
:mod:`quantmedic.judge.metrics`.

By deciding layer: the accuracy of the verdicts the step checker decided against those an LLM judge
(or the degenerate-output rules) decided. The layer is the verdict's ``decided_by`` when the verdict
is known (attached to the review, ``annotate pull --attach-verdicts``, or passed in); else it is read
from the judge's name (``rules``; ``checker`` or ``checker+…`` for the checker; anything else: the
judge), which is how ``judge --checker gate`` names them. Where the verdicts are known, conflicts
between the LLM judge and the step checker get their own table: how often the annotators accept the
LLM's diagnosis, and how often they put the first error at the checker's checked step.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from quantmedic.judge.metrics import (cohen_kappa, fleiss_kappa, krippendorff_alpha_nominal,
                                      weighted_wilson_interval)
from quantmedic.taxonomy.jsonl import write_atomic
from quantmedic.taxonomy.records import Review, Verdict


@dataclass(frozen=True)
class Rate:
    """A weighted proportion over verdicts with its 95% Wilson interval."""

    n: int
    value: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class VerdictOutcome:
    """One reviewed verdict: what its annotators said, averaged over them."""

    verdict_id: str
    weight: float
    accepted: float
    step_exact: float
    step_within_one: float
    said_judge_right: float | None
    judge_category: str | None
    model: str | None
    quantization: str | None
    annotators: int
    layer: str = "judge"
    """The layer that decided the verdict: judge, checker or rules."""
    conflict: bool | None = None
    """Whether the LLM judge conflicts with the step checker (None: the verdict is not known)."""
    checked_step_confirmed: float | None = None
    """Share of the annotators whose first wrong step is the checker's checked step (None: no checked step)."""


def layer_of(review: Review, verdict: Verdict | None = None) -> str:
    """The layer that decided the reviewed verdict: its ``decided_by`` when known, else from the judge's name.

    >>> from quantmedic.taxonomy.records import JudgeClaim
    >>> claim = lambda model: Review(verdict_id="v", annotator="a", judge=JudgeClaim(model=model))
    >>> [layer_of(claim(m)) for m in ("checker+q", "rules", "q")]
    ['checker', 'rules', 'judge']
    """
    verdict = verdict or review.verdict
    if verdict is not None:
        return verdict.decided_by
    model = review.judge.model
    return "rules" if model == "rules" else "checker" if model == "checker" or model.startswith("checker+") else "judge"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def outcomes(reviews: Sequence[Review], verdicts: Mapping[str, Verdict] | None = None) -> list[VerdictOutcome]:
    """One outcome per reviewed verdict; ``verdicts`` (by id) tell the layer and conflicts where the reviews do
    not carry their verdict."""
    by_verdict: dict[str, list[Review]] = defaultdict(list)
    for review in reviews:
        by_verdict[review.verdict_id].append(review)
    result = []
    for verdict_id, group in by_verdict.items():
        first = group[0]
        judge_step = first.judge.first_wrong_step

        def within_one(r: Review) -> bool:
            if r.first_wrong_step is None or judge_step is None:
                return False
            if -1 in (r.first_wrong_step, judge_step):
                return r.first_wrong_step == judge_step
            return abs(r.first_wrong_step - judge_step) <= 1

        said = [r.judge_correct for r in group if r.judge_correct is not None]
        verdict = (verdicts or {}).get(verdict_id) or first.verdict
        checked = None if verdict is None else verdict.checked_step
        result.append(VerdictOutcome(
            verdict_id=verdict_id, weight=first.sampling_weight, accepted=_mean([r.accepts for r in group]),
            step_exact=_mean([r.accepts_step for r in group]), step_within_one=_mean([within_one(r) for r in group]),
            said_judge_right=_mean(said) if said else None, judge_category=first.judge.category, model=first.model,
            quantization=first.quantization, annotators=len(group), layer=layer_of(first, verdict),
            conflict=None if verdict is None else verdict.conflict,
            checked_step_confirmed=None if checked is None else _mean([r.first_wrong_step == checked for r in group])))
    return result


def rate(items: Sequence[VerdictOutcome], value: Callable[[VerdictOutcome], float]) -> Rate:
    if not items:
        return Rate(0, None, None, None)
    weights = [o.weight for o in items]
    values = [value(o) for o in items]
    interval = weighted_wilson_interval(values, weights)
    point = sum(w * v for w, v in zip(weights, values)) / sum(weights)
    return Rate(len(items), point, interval.low if interval else None, interval.high if interval else None)


def breakdown(items: Sequence[VerdictOutcome], key: Callable[[VerdictOutcome], str | None]) -> dict[str, Rate]:
    groups: dict[str, list[VerdictOutcome]] = defaultdict(list)
    for o in items:
        groups[str(key(o))].append(o)
    return {name: rate(group, lambda o: o.accepted) for name, group in sorted(groups.items())}


def confusion(reviews: Sequence[Review]) -> dict[str, dict[str, int]]:
    """Judge's category (rows) against the annotators' (columns), counted per review."""
    table: dict[str, Counter] = defaultdict(Counter)
    for r in reviews:
        table[str(r.judge.category)][str(r.category)] += 1
    return {judge: dict(sorted(row.items())) for judge, row in sorted(table.items())}


@dataclass(frozen=True)
class Agreement:
    """Inter-annotator agreement on verdicts that several annotators reviewed."""

    items: int
    annotators: int
    fleiss_step: float | None
    fleiss_category: float | None
    alpha_step: float | None
    alpha_category: float | None
    cohen_step: float | None
    cohen_category: float | None


def agreement(reviews: Sequence[Review]) -> Agreement:
    by_verdict: dict[str, dict[str, Review]] = defaultdict(dict)
    for r in reviews:
        by_verdict[r.verdict_id][r.annotator] = r
    shared = {v: group for v, group in by_verdict.items() if len(group) >= 2}
    annotators = sorted({a for group in shared.values() for a in group})
    steps = [[r.first_wrong_step for r in group.values()] for group in shared.values()]
    cats = [[r.category for r in group.values()] for group in shared.values()]
    cohen_step = cohen_cat = None
    if len(annotators) == 2:  # two raters: Cohen's kappa, paired by verdict
        a, b = annotators
        cohen_step = cohen_kappa([g.get(a).first_wrong_step if a in g else None for g in shared.values()],
                                 [g.get(b).first_wrong_step if b in g else None for g in shared.values()])
        cohen_cat = cohen_kappa([g.get(a).category if a in g else None for g in shared.values()],
                                [g.get(b).category if b in g else None for g in shared.values()])
    return Agreement(len(shared), len(annotators), fleiss_kappa(steps), fleiss_kappa(cats),
                     krippendorff_alpha_nominal(steps), krippendorff_alpha_nominal(cats), cohen_step, cohen_cat)


@dataclass(frozen=True)
class DiagnosticReport:
    reviews: int
    verdicts: int
    annotators: dict[str, int]
    weighted: bool
    diagnostic_accuracy: Rate
    step_exact: Rate
    step_within_one: Rate
    said_judge_right: Rate
    by_category: dict[str, Rate]
    by_model: dict[str, Rate]
    by_quantization: dict[str, Rate]
    confusion: dict[str, dict[str, int]]
    agreement: Agreement
    by_layer: dict[str, Rate] = field(default_factory=dict)
    checked: dict[str, dict[str, Rate]] = field(default_factory=dict)
    """Verdicts with a checked step, by conflict / no conflict: the LLM's diagnosis accepted, the checked step
    confirmed."""


def checked_table(items: Sequence[VerdictOutcome]) -> dict[str, dict[str, Rate]]:
    """Of the verdicts with a checked step, conflicts and the others: accepted, and checked step confirmed."""
    groups: dict[str, list[VerdictOutcome]] = defaultdict(list)
    for o in items:
        if o.checked_step_confirmed is not None:
            groups["conflict" if o.conflict else "no conflict"].append(o)
    return {name: {"accepted": rate(group, lambda o: o.accepted),
                   "checked step confirmed": rate(group, lambda o: o.checked_step_confirmed or 0.0)}
            for name, group in sorted(groups.items())}


def diagnostic_report(reviews: Sequence[Review], verdicts: Sequence[Verdict] | None = None) -> DiagnosticReport:
    """The report of ``reviews``; ``verdicts``: the verdicts they review, for the layers and the conflicts."""
    items = outcomes(reviews, {v.id: v for v in verdicts or ()})
    said = [o for o in items if o.said_judge_right is not None]
    return DiagnosticReport(
        reviews=len(reviews), verdicts=len(items), annotators=dict(Counter(r.annotator for r in reviews)),
        weighted=any(o.weight != 1.0 for o in items),
        diagnostic_accuracy=rate(items, lambda o: o.accepted), step_exact=rate(items, lambda o: o.step_exact),
        step_within_one=rate(items, lambda o: o.step_within_one),
        said_judge_right=rate(said, lambda o: o.said_judge_right),
        by_category=breakdown(items, lambda o: o.judge_category), by_model=breakdown(items, lambda o: o.model),
        by_quantization=breakdown(items, lambda o: o.quantization), confusion=confusion(reviews),
        agreement=agreement(reviews), by_layer=breakdown(items, lambda o: o.layer), checked=checked_table(items))


def report_to_json(report: DiagnosticReport) -> dict:
    return asdict(report)


def _fmt(r: Rate) -> str:
    if r.value is None:
        return "–"
    return f"{100 * r.value:.1f}% [{100 * r.low:.1f}, {100 * r.high:.1f}] (n = {r.n})"


def report_to_markdown(report: DiagnosticReport) -> str:
    lines = ["# Diagnostic accuracy of the judge", "",
             f"{report.reviews} submitted reviews of {report.verdicts} verdicts by {len(report.annotators)} "
             f"annotators ({', '.join(f'{a}: {n}' for a, n in sorted(report.annotators.items()))})."
             + (" Weighted by inverse sampling probabilities." if report.weighted else ""), "",
             "| measure | value [95% Wilson interval] |", "|---|---|",
             f"| diagnostic accuracy (step and category accepted) | {_fmt(report.diagnostic_accuracy)} |",
             f"| step localisation, exact | {_fmt(report.step_exact)} |",
             f"| step localisation, within one step | {_fmt(report.step_within_one)} |",
             f'| annotators answering "the judge is right" | {_fmt(report.said_judge_right)} |', ""]
    for title, table in (("judge's category", report.by_category), ("model", report.by_model),
                         ("quantization", report.by_quantization), ("deciding layer", report.by_layer)):
        lines += [f"## By {title}", "", f"| {title} | diagnostic accuracy |", "|---|---|"]
        lines += [f"| {name} | {_fmt(r)} |" for name, r in table.items()]
        lines.append("")
    lines += _checked_lines(report.checked)
    columns = sorted({c for row in report.confusion.values() for c in row})
    lines += ["## Category confusion (rows: judge, columns: annotators; counts of reviews)", "",
              "| judge \\ human | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for judge, row in report.confusion.items():
        lines.append(f"| {judge} | " + " | ".join(str(row.get(c, 0)) for c in columns) + " |")
    a = report.agreement
    k = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    lines += ["", "## Inter-annotator agreement", "",
              f"{a.items} verdicts reviewed by 2+ of {a.annotators} annotators.", "",
              "| | first wrong step | category |", "|---|---:|---:|",
              f"| Fleiss' kappa | {k(a.fleiss_step)} | {k(a.fleiss_category)} |",
              f"| Krippendorff's alpha (nominal) | {k(a.alpha_step)} | {k(a.alpha_category)} |",
              f"| Cohen's kappa (two annotators) | {k(a.cohen_step)} | {k(a.cohen_category)} |"]
    return "\n".join(lines) + "\n"


def _checked_lines(checked: dict[str, dict[str, Rate]]) -> list[str]:
    """The conflicts table: verdicts with a checked step, conflicting with the step checker or not."""
    if not checked:
        return []
    lines = ["## Verdicts with a checked error (the step checker's false claim)", "",
             "| LLM judge vs checker | diagnosis accepted | first error at the checked step |", "|---|---|---|"]
    return lines + [f"| {name} | {_fmt(r['accepted'])} | {_fmt(r['checked step confirmed'])} |"
                    for name, r in checked.items()] + [""]


REPORT_FILES = ("report.json", "report.md", "accuracy_by_category.png", "category_confusion.png")


def write_report(reviews: Sequence[Review], out: Path,
                 verdicts: Sequence[Verdict] | None = None) -> tuple[str, list[str]]:
    """Write report.json, report.md and the two PNGs into ``out``; returns the Markdown and the file names."""
    from .figures import accuracy_bars, confusion_heatmap

    report = diagnostic_report(reviews, verdicts)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "report.json", [json.dumps(report_to_json(report), indent=2) + "\n"])
    markdown = report_to_markdown(report)
    write_atomic(out / "report.md", [markdown])
    accuracy_bars(report.by_category, out / "accuracy_by_category.png")
    confusion_heatmap(report.confusion, out / "category_confusion.png")
    return markdown, list(REPORT_FILES)

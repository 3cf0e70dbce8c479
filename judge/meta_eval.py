"""Judging the judge: scores of each judge (and the ensemble) against human first-error labels.

Pure functions from verdicts whose attempts carry a ``label`` (ProcessBench's 0-based index of
the earliest wrong step, or -1) to :class:`MetaEvaluation`, and from that to JSON and Markdown.
An unscored answer counts as wrong, as ProcessBench counts unparsable outputs, and is also
counted on its own. All metrics come from :mod:`quantmedic.judge.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import combinations

from quantmedic.taxonomy.records import JudgeAnswer, Usage, Verdict

from .ensemble import majority
from .metrics import (CalibrationBin, Localization, ProcessBenchIntervals, cohen_kappa, expected_calibration_error,
                      localization, processbench_bootstrap, reliability_table)

ENSEMBLE = "ensemble"
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class Prediction:
    """One judge's call on one item: the step (None when unscored), category and confidence."""

    step: int | None
    category: str | None = None
    confidence: float | None = None


@dataclass(frozen=True)
class ThresholdRow:
    """Routing at a confidence threshold: the share of items kept and their accuracy."""

    threshold: float
    coverage: float
    accuracy: float | None


@dataclass(frozen=True)
class JudgeScore:
    """Everything measured for one judge (or the ensemble) on the labelled items it judged."""

    name: str
    n_items: int
    processbench: ProcessBenchIntervals
    localization: Localization
    calibration: tuple[CalibrationBin, ...]
    ece: float | None
    thresholds: tuple[ThresholdRow, ...]
    usage: Usage
    requests: int


@dataclass(frozen=True)
class PairAgreement:
    """Cohen's kappa between two judges on the step and on error / no error, over items both scored."""

    a: str
    b: str
    n_items: int
    kappa_step: float | None
    kappa_error: float | None


@dataclass(frozen=True)
class MetaEvaluation:
    judges: tuple[JudgeScore, ...]
    ensemble: JudgeScore | None
    agreement: tuple[PairAgreement, ...]


def judge_name(answer: JudgeAnswer) -> str:
    """The judge an answer belongs to: its label without the ``#sample`` suffix."""
    return answer.judge.split("#", 1)[0]


def per_judge_predictions(verdict: Verdict) -> dict[str, Prediction]:
    """Each judge's own call on the item (the majority of its samples)."""
    grouped: dict[str, list[JudgeAnswer]] = {}
    for answer in verdict.judges:
        grouped.setdefault(judge_name(answer), []).append(answer)
    predictions = {}
    for name, answers in grouped.items():
        vote = majority(answers)
        predictions[name] = (Prediction(vote.first_wrong_step, vote.category, vote.confidence) if vote
                             else Prediction(None))
    return predictions


def verdict_prediction(verdict: Verdict) -> Prediction:
    """The verdict's own (majority) call; degenerate verdicts without a step count as unscored."""
    if verdict.status != "ok" or verdict.first_wrong_step is None:
        return Prediction(None)
    return Prediction(verdict.first_wrong_step, verdict.category, verdict.confidence)


def labels_of(verdicts: Sequence[Verdict]) -> list[int]:
    labels = []
    for verdict in verdicts:
        if verdict.attempt.label is None:
            raise ValueError(f"attempt {verdict.attempt.id} has no human label; judge-eval needs labelled data")
        labels.append(verdict.attempt.label)
    return labels


def threshold_rows(labels: Sequence[int], predictions: Sequence[Prediction],
                   thresholds: Sequence[float] = THRESHOLDS) -> tuple[ThresholdRow, ...]:
    """Coverage and accuracy of the items whose stated confidence is at least each threshold."""
    rows = []
    for threshold in thresholds:
        kept = [(label, p) for label, p in zip(labels, predictions)
                if p.step is not None and p.confidence is not None and p.confidence >= threshold]
        accuracy = sum(p.step == label for label, p in kept) / len(kept) if kept else None
        rows.append(ThresholdRow(threshold, len(kept) / len(labels) if labels else 0.0, accuracy))
    return tuple(rows)


def score(name: str, labels: Sequence[int], predictions: Sequence[Prediction], *, usage: Usage = Usage(),
          requests: int = 0, n_resamples: int = 2000, seed: int = 0, n_bins: int = 10) -> JudgeScore:
    """Score one judge's predictions against the labels."""
    pairs = [(label, p.step) for label, p in zip(labels, predictions, strict=True)]
    scored = [(label, p) for label, p in zip(labels, predictions) if p.step is not None and p.confidence is not None]
    confidences = [p.confidence for _, p in scored]
    correct = [p.step == label for label, p in scored]
    return JudgeScore(name=name, n_items=len(pairs),
                      processbench=processbench_bootstrap(pairs, n_resamples=n_resamples, seed=seed),
                      localization=localization(pairs),
                      calibration=tuple(reliability_table(confidences, correct, n_bins=n_bins)),
                      ece=expected_calibration_error(confidences, correct, n_bins=n_bins),
                      thresholds=threshold_rows(labels, predictions), usage=usage, requests=requests)


def pairwise_agreement(predictions: dict[str, Sequence[Prediction]]) -> tuple[PairAgreement, ...]:
    """Cohen's kappa for every pair of judges."""
    rows = []
    for a, b in combinations(predictions, 2):
        steps_a = [p.step for p in predictions[a]]
        steps_b = [p.step for p in predictions[b]]
        both = sum(x is not None and y is not None for x, y in zip(steps_a, steps_b))
        rows.append(PairAgreement(a, b, both, cohen_kappa(steps_a, steps_b),
                                  cohen_kappa([None if s is None else s >= 0 for s in steps_a],
                                              [None if s is None else s >= 0 for s in steps_b])))
    return tuple(rows)


def evaluate(verdicts: Sequence[Verdict], *, n_resamples: int = 2000, seed: int = 0,
             final: str | None = None) -> MetaEvaluation:
    """Score every judge that answered, their pairwise agreement, and (with 2+ judges) the ensemble; with
    ``final`` (the step checker in front of the judges), the verdicts themselves under that name instead."""
    labels = labels_of(verdicts)
    names = list(dict.fromkeys(judge_name(a) for v in verdicts for a in v.judges))
    per_item = [per_judge_predictions(v) for v in verdicts]
    predictions = {name: [item.get(name, Prediction(None)) for item in per_item] for name in names}
    judges = []
    for name in names:
        answers = [a for v in verdicts for a in v.judges if judge_name(a) == name]
        usage = sum((a.usage for a in answers), Usage())
        judges.append(score(name, labels, predictions[name], usage=usage, requests=sum(a.tries for a in answers),
                            n_resamples=n_resamples, seed=seed))
    ensemble = None
    if final or len(names) > 1 or any(len(v.judges) > 1 for v in verdicts):
        all_answers = [a for v in verdicts for a in v.judges]
        ensemble = score(final or ENSEMBLE, labels, [verdict_prediction(v) for v in verdicts],
                         usage=sum((a.usage for a in all_answers), Usage()),
                         requests=sum(a.tries for a in all_answers), n_resamples=n_resamples, seed=seed)
    return MetaEvaluation(tuple(judges), ensemble, pairwise_agreement(predictions))


def _interval(interval) -> dict | None:
    return None if interval is None else {"low": interval.low, "high": interval.high}


def score_to_json(s: JudgeScore) -> dict:
    pb = s.processbench
    return {
        "n_items": s.n_items,
        "error_accuracy": pb.scores.error_accuracy, "error_accuracy_ci95": _interval(pb.error_accuracy),
        "correct_accuracy": pb.scores.correct_accuracy, "correct_accuracy_ci95": _interval(pb.correct_accuracy),
        "f1": pb.scores.f1, "f1_ci95": _interval(pb.f1),
        "n_error": pb.scores.n_error, "n_correct": pb.scores.n_correct, "unscored": pb.scores.n_unscored,
        "localization": {**asdict(s.localization),
                         "offsets": {str(k): v for k, v in s.localization.offsets.items()},
                         "false_alarm_steps": {str(k): v for k, v in s.localization.false_alarm_steps.items()}},
        "calibration": {"ece": s.ece, "bins": [asdict(b) for b in s.calibration],
                        "thresholds": [asdict(r) for r in s.thresholds]},
        "requests": s.requests, "prompt_tokens": s.usage.prompt_tokens,
        "completion_tokens": s.usage.completion_tokens,
    }


def to_json(evaluation: MetaEvaluation) -> dict:
    """The ``metrics.json`` document (keys documented in README.md)."""
    return {
        "judges": {s.name: score_to_json(s) for s in evaluation.judges},
        "ensemble": score_to_json(evaluation.ensemble) if evaluation.ensemble else None,
        "agreement": [asdict(p) for p in evaluation.agreement],
    }


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _with_ci(value: float | None, interval) -> str:
    if value is None:
        return "–"
    return f"{_pct(value)} [{_pct(interval.low)}, {_pct(interval.high)}]" if interval else _pct(value)


def to_markdown(evaluation: MetaEvaluation, title: str = "Judge meta-evaluation") -> str:
    """A Markdown summary: the side-by-side table, localisation, agreement and calibration."""
    scores = [*evaluation.judges, *([evaluation.ensemble] if evaluation.ensemble else [])]
    lines = [f"# {title}", "",
             "Accuracies in %, with 95% stratified bootstrap intervals. Unscored answers count as wrong.", "",
             "| judge | items | error acc. | correct acc. | F1 | unscored | requests | tokens in / out |",
             "|---|---:|---|---|---|---:|---:|---|"]
    for s in scores:
        pb = s.processbench
        lines.append(f"| {s.name} | {s.n_items} | {_with_ci(pb.scores.error_accuracy, pb.error_accuracy)} | "
                     f"{_with_ci(pb.scores.correct_accuracy, pb.correct_accuracy)} | {_with_ci(pb.scores.f1, pb.f1)} | "
                     f"{pb.scores.n_unscored} | {s.requests} | {s.usage.prompt_tokens} / {s.usage.completion_tokens} |")
    lines += ["", "## Where the judges point (samples with an error)", "",
              "| judge | exact | too early | too late | missed (said no error) | unscored | mean steps off |"
              " false alarms on correct |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in scores:
        loc = s.localization
        mean = "–" if loc.mean_abs_offset is None else f"{loc.mean_abs_offset:.2f}"
        lines.append(f"| {s.name} | {loc.exact} | {loc.too_early} | {loc.too_late} | {loc.missed} | {loc.unscored} "
                     f"| {mean} | {loc.false_alarms} / {loc.n_correct} |")
    if evaluation.agreement:
        lines += ["", "## Agreement (Cohen's kappa)", "", "| judges | items both scored | on the step | "
                  "on error / no error |", "|---|---:|---:|---:|"]
        for p in evaluation.agreement:
            fmt = lambda k: "–" if k is None else f"{k:.3f}"  # noqa: E731
            lines.append(f"| {p.a} vs {p.b} | {p.n_items} | {fmt(p.kappa_step)} | {fmt(p.kappa_error)} |")
    lines += ["", "## Calibration", "",
              "Expected calibration error (ECE) of the stated confidence, and what routing at a threshold keeps.", "",
              "| judge | ECE | " + " | ".join(f"conf ≥ {t}: kept / acc." for t in THRESHOLDS) + " |",
              "|---|---:|" + "---|" * len(THRESHOLDS)]
    for s in scores:
        ece = "–" if s.ece is None else f"{s.ece:.3f}"
        cells = " | ".join(f"{_pct(r.coverage)}% / {_pct(r.accuracy)}" for r in s.thresholds)
        lines.append(f"| {s.name} | {ece} | {cells} |")
    return "\n".join(lines) + "\n"

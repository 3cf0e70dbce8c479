"""Full precision vs. quantized: a paired comparison of two sets of graded attempts.

Attempts pair by problem id and sample index. Accuracies are over the *usable* pairs (both sides
present and gradable), so their difference is exactly the paired one; McNemar's exact test uses
the discordant pairs. The quantized attempts that went right → wrong are the failures the judge
diagnoses next. Output length and degenerate-output rates are over all present pairs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from statistics import NormalDist

from quantmedic.judge.degenerate import DEGENERATE_SUBTYPES, detect_degenerate
from quantmedic.judge.metrics import Interval, wilson_interval
from quantmedic.taxonomy.records import Attempt

from .grading import model_label

PairKey = tuple[str, int]


def pair_key(attempt: Attempt) -> PairKey:
    """What pairs a full-precision attempt with its quantized counterpart: problem id, sample index."""
    return attempt.problem.id, attempt.sampling.sample_index


def mcnemar_exact(right_to_wrong: int, wrong_to_right: int) -> float:
    """Two-sided exact McNemar p-value: twice the smaller binomial(b + c, 1/2) tail, at most 1.

    >>> round(mcnemar_exact(10, 2), 6)   # 2 * (1 + 12 + 66) / 2**12
    0.038574
    >>> mcnemar_exact(3, 3), mcnemar_exact(0, 0)
    (1.0, 1.0)
    """
    if right_to_wrong < 0 or wrong_to_right < 0:
        raise ValueError("counts must be non-negative")
    n = right_to_wrong + wrong_to_right
    tail = Fraction(sum(math.comb(n, k) for k in range(min(right_to_wrong, wrong_to_right) + 1)), 2 ** n)
    return float(min(Fraction(1), 2 * tail))


def paired_difference_interval(right_to_wrong: int, wrong_to_right: int, n: int,
                               confidence: float = 0.95) -> Interval | None:
    """Wald interval for the paired difference in accuracy (quantized − full precision).

    >>> i = paired_difference_interval(10, 2, 100)
    >>> round(i.low, 4), round(i.high, 4)
    (-0.1461, -0.0139)
    """
    if n <= 0:
        return None
    d = (wrong_to_right - right_to_wrong) / n
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    se = math.sqrt(max(0.0, right_to_wrong + wrong_to_right - n * d * d)) / n
    return Interval(max(-1.0, d - z * se), min(1.0, d + z * se), confidence)


@dataclass(frozen=True)
class Accuracy:
    """``correct`` out of ``n`` with its 95% Wilson interval (None when ``n`` is 0)."""

    correct: int
    n: int

    @property
    def value(self) -> float | None:
        return self.correct / self.n if self.n else None

    @property
    def interval(self) -> Interval | None:
        return wilson_interval(self.correct, self.n)


@dataclass(frozen=True)
class GroupComparison:
    """Both sides' accuracy on the usable pairs of one subject or level."""

    group: str
    fp: Accuracy
    quant: Accuracy
    right_to_wrong: int
    wrong_to_right: int


@dataclass(frozen=True)
class OutputStats:
    """Length and degeneracy of one side's outputs (``unit``: ``tokens`` or ``words``)."""

    n: int
    mean_length: float | None
    unit: str
    degenerate: Accuracy
    degenerate_kinds: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Comparison:
    """The paired comparison. Pairs are ``(full precision, quantized)`` attempts."""

    fp_label: str
    quant_label: str
    fp_total: int
    quant_total: int
    paired: int
    unpaired_fp: int
    unpaired_quant: int
    ungradable_pairs: int
    fp: Accuracy
    quant: Accuracy
    both_right: int
    both_wrong: int
    right_to_wrong_pairs: tuple[tuple[Attempt, Attempt], ...]
    wrong_to_right_pairs: tuple[tuple[Attempt, Attempt], ...]
    p_value: float
    difference_interval: Interval | None
    by_subject: tuple[GroupComparison, ...]
    by_level: tuple[GroupComparison, ...]
    fp_outputs: OutputStats
    quant_outputs: OutputStats

    @property
    def usable(self) -> int:
        return self.fp.n

    @property
    def difference(self) -> float | None:
        """Quantized minus full-precision accuracy, on the usable pairs."""
        return None if not self.usable else (self.quant.correct - self.fp.correct) / self.usable

    @property
    def right_to_wrong(self) -> list[Attempt]:
        """The quantized attempts that fail where full precision succeeds: what the judge gets next."""
        return [quant for _, quant in self.right_to_wrong_pairs]

    @property
    def wrong_to_right(self) -> list[Attempt]:
        """The quantized attempts that succeed where full precision fails."""
        return [quant for _, quant in self.wrong_to_right_pairs]


def _index(attempts: Sequence[Attempt], side: str) -> dict[PairKey, Attempt]:
    index: dict[PairKey, Attempt] = {}
    for attempt in attempts:
        key = pair_key(attempt)
        if key in index:
            raise ValueError(f"{side}: two attempts for problem {key[0]} sample {key[1]} "
                             f"({index[key].id} and {attempt.id})")
        index[key] = attempt
    return index


def _label(attempts: Sequence[Attempt], default: str) -> str:
    labels = Counter(model_label(a) for a in attempts)
    return labels.most_common(1)[0][0] if labels else default


def _groups(pairs: list[tuple[Attempt, Attempt]],
            attribute: Callable[[Attempt], object]) -> tuple[GroupComparison, ...]:
    if not any(attribute(fp) is not None for fp, _ in pairs):
        return ()
    grouped: dict[object, list[tuple[Attempt, Attempt]]] = {}
    for pair in pairs:
        grouped.setdefault(attribute(pair[0]), []).append(pair)

    def order(value: object) -> tuple:
        return (value is None, not isinstance(value, int), value if isinstance(value, int) else str(value))

    return tuple(GroupComparison("(none)" if value is None else str(value),
                                 Accuracy(sum(bool(fp.correct) for fp, _ in group), len(group)),
                                 Accuracy(sum(bool(q.correct) for _, q in group), len(group)),
                                 sum(bool(fp.correct) and not q.correct for fp, q in group),
                                 sum(not fp.correct and bool(q.correct) for fp, q in group))
                 for value, group in sorted(grouped.items(), key=lambda item: order(item[0])))


def _length(attempt: Attempt, unit: str) -> int:
    return attempt.completion_tokens if unit == "tokens" else len(attempt.solution_text.split())  # type: ignore


def _outputs(attempts: list[Attempt], unit: str) -> OutputStats:
    kinds = Counter(d.kind for d in map(detect_degenerate, attempts) if d is not None)
    mean = sum(_length(a, unit) for a in attempts) / len(attempts) if attempts else None
    return OutputStats(len(attempts), mean, unit, Accuracy(sum(kinds.values()), len(attempts)),
                       tuple((k, kinds[k]) for k in DEGENERATE_SUBTYPES if kinds[k]))


def compare(fp_attempts: Sequence[Attempt], quant_attempts: Sequence[Attempt], *, fp_label: str | None = None,
            quant_label: str | None = None) -> Comparison:
    """Compare graded full-precision and quantized attempts, paired by problem id and sample index.

    Raises ValueError when one side holds two attempts with the same key, or nothing pairs up.
    """
    fp_index, quant_index = _index(fp_attempts, "full precision"), _index(quant_attempts, "quantized")
    present = [(fp_index[k], quant_index[k]) for k in fp_index if k in quant_index]
    if not present:
        raise ValueError("no attempt pairs up: the two sets share no (problem id, sample index)")
    usable = [(fp, q) for fp, q in present if fp.correct is not None and q.correct is not None]
    right_to_wrong = tuple((fp, q) for fp, q in usable if fp.correct and not q.correct)
    wrong_to_right = tuple((fp, q) for fp, q in usable if not fp.correct and q.correct)
    unit = "tokens" if all(a.completion_tokens is not None for pair in present for a in pair) else "words"
    return Comparison(
        fp_label=fp_label or _label(fp_attempts, "full precision"),
        quant_label=quant_label or _label(quant_attempts, "quantized"),
        fp_total=len(fp_attempts), quant_total=len(quant_attempts), paired=len(present),
        unpaired_fp=len(fp_index) - len(present), unpaired_quant=len(quant_index) - len(present),
        ungradable_pairs=len(present) - len(usable),
        fp=Accuracy(sum(bool(fp.correct) for fp, _ in usable), len(usable)),
        quant=Accuracy(sum(bool(q.correct) for _, q in usable), len(usable)),
        both_right=sum(bool(fp.correct and q.correct) for fp, q in usable),
        both_wrong=sum(not fp.correct and not q.correct for fp, q in usable),
        right_to_wrong_pairs=right_to_wrong, wrong_to_right_pairs=wrong_to_right,
        p_value=mcnemar_exact(len(right_to_wrong), len(wrong_to_right)),
        difference_interval=paired_difference_interval(len(right_to_wrong), len(wrong_to_right), len(usable)),
        by_subject=_groups(usable, lambda a: a.problem.subject),
        by_level=_groups(usable, lambda a: a.problem.level),
        fp_outputs=_outputs([fp for fp, _ in present], unit),
        quant_outputs=_outputs([q for _, q in present], unit))


# --- reports --------------------------------------------------------------------------------------

def _interval_json(interval: Interval | None) -> list[float] | None:
    return None if interval is None else [round(interval.low, 6), round(interval.high, 6)]


def _accuracy_json(acc: Accuracy) -> dict:
    return {"correct": acc.correct, "n": acc.n, "accuracy": None if acc.value is None else round(acc.value, 6),
            "wilson95": _interval_json(acc.interval)}


def _group_json(group: GroupComparison) -> dict:
    return {"group": group.group, "full_precision": _accuracy_json(group.fp), "quantized": _accuracy_json(group.quant),
            "right_to_wrong": group.right_to_wrong, "wrong_to_right": group.wrong_to_right}


def _outputs_json(stats: OutputStats) -> dict:
    return {"n": stats.n, "mean_length": None if stats.mean_length is None else round(stats.mean_length, 3),
            "length_unit": stats.unit, "degenerate": _accuracy_json(stats.degenerate),
            "degenerate_kinds": dict(stats.degenerate_kinds)}


def _flip_json(fp: Attempt, quant: Attempt) -> dict:
    return {"problem_id": quant.problem.id, "source_id": quant.problem.source_id, "sample_index":
            quant.sampling.sample_index, "subject": quant.problem.subject, "level": quant.problem.level,
            "reference_answer": quant.problem.reference_answer, "full_precision_answer": fp.final_answer,
            "quantized_answer": quant.final_answer, "full_precision_attempt": fp.id, "quantized_attempt": quant.id}


def to_json(c: Comparison) -> dict:
    """The comparison as plain JSON data (flips as problem ids and answers, not whole attempts)."""
    return {
        "full_precision": {"label": c.fp_label, "attempts": c.fp_total, "unpaired": c.unpaired_fp,
                           **_accuracy_json(c.fp)},
        "quantized": {"label": c.quant_label, "attempts": c.quant_total, "unpaired": c.unpaired_quant,
                      **_accuracy_json(c.quant)},
        "pairs": {"present": c.paired, "usable": c.usable, "ungradable": c.ungradable_pairs,
                  "both_right": c.both_right, "both_wrong": c.both_wrong,
                  "right_to_wrong": len(c.right_to_wrong_pairs), "wrong_to_right": len(c.wrong_to_right_pairs)},
        "difference": None if c.difference is None else round(c.difference, 6),
        "difference_wald95": _interval_json(c.difference_interval),
        "mcnemar_exact_p": c.p_value,
        "by_subject": [_group_json(g) for g in c.by_subject],
        "by_level": [_group_json(g) for g in c.by_level],
        "outputs": {"full_precision": _outputs_json(c.fp_outputs), "quantized": _outputs_json(c.quant_outputs)},
        "right_to_wrong": [_flip_json(fp, q) for fp, q in c.right_to_wrong_pairs],
        "wrong_to_right": [_flip_json(fp, q) for fp, q in c.wrong_to_right_pairs],
    }


def _pct(acc: Accuracy) -> str:
    if acc.value is None:
        return "–"
    i = acc.interval
    return f"{100 * acc.value:.1f}% [{100 * i.low:.1f}, {100 * i.high:.1f}] ({acc.correct}/{acc.n})"  # type: ignore


def _group_table(title: str, groups: Sequence[GroupComparison], c: Comparison) -> list[str]:
    if not groups:
        return []
    lines = [f"## By {title}", "", f"| {title} | n | {c.fp_label} | {c.quant_label} | right→wrong | wrong→right |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {g.group} | {g.fp.n} | {_pct(g.fp)} | {_pct(g.quant)} | {g.right_to_wrong} | {g.wrong_to_right} |"
              for g in groups]
    return [*lines, ""]


def to_markdown(c: Comparison, max_flips: int = 20) -> str:
    """A readable report: accuracy with 95% Wilson intervals, McNemar, flips, breakdowns, outputs."""
    diff = "–" if c.difference is None else f"{100 * c.difference:+.1f} points"
    if c.difference_interval is not None:
        diff += f" [{100 * c.difference_interval.low:+.1f}, {100 * c.difference_interval.high:+.1f}] (Wald 95%)"
    lines = [
        f"# {c.fp_label} vs {c.quant_label}", "",
        f"Pairs (same problem, same sample index): {c.paired}; usable (both graded): {c.usable}; "
        f"ungradable on either side: {c.ungradable_pairs}; unpaired: {c.unpaired_fp} full-precision, "
        f"{c.unpaired_quant} quantized. Accuracies are over the usable pairs, with 95% Wilson intervals.", "",
        "| | accuracy |", "|---|---|",
        f"| {c.fp_label} (full precision) | {_pct(c.fp)} |",
        f"| {c.quant_label} (quantized) | {_pct(c.quant)} |", "",
        f"Paired difference (quantized − full precision): {diff}. McNemar's exact test on the "
        f"{len(c.right_to_wrong_pairs) + len(c.wrong_to_right_pairs)} discordant pairs: p = {c.p_value:.4g}.", "",
        "| full precision \\ quantized | right | wrong |", "|---|---|---|",
        f"| right | {c.both_right} | {len(c.right_to_wrong_pairs)} |",
        f"| wrong | {len(c.wrong_to_right_pairs)} | {c.both_wrong} |", "",
    ]
    lines += _group_table("subject", c.by_subject, c) + _group_table("level", c.by_level, c)
    lines += ["## Outputs", "", "| | mean length | degenerate | kinds |", "|---|---|---|---|"]
    for label, stats in ((c.fp_label, c.fp_outputs), (c.quant_label, c.quant_outputs)):
        length = "–" if stats.mean_length is None else f"{stats.mean_length:.1f} {stats.unit}"
        kinds = ", ".join(f"{k} {n}" for k, n in stats.degenerate_kinds) or "none"
        lines.append(f"| {label} | {length} | {_pct(stats.degenerate)} | {kinds} |")
    unit = ("tokens: completion_tokens of every attempt" if c.fp_outputs.unit == "tokens" else
            "words (whitespace-separated): not every attempt records completion_tokens")
    lines += ["", f"Length unit: {unit}.", ""]
    for title, pairs in (("Right → wrong (quantized failures, for the judge)", c.right_to_wrong_pairs),
                         ("Wrong → right", c.wrong_to_right_pairs)):
        lines += [f"## {title}: {len(pairs)}", ""]
        if pairs:
            lines += ["| problem | reference | full precision | quantized |", "|---|---|---|---|"]
            lines += [f"| {q.problem.source_id or q.problem.id} | {q.problem.reference_answer} | {fp.final_answer} | "
                      f"{q.final_answer} |" for fp, q in pairs[:max_flips]]
            if len(pairs) > max_flips:
                lines.append(f"\n…and {len(pairs) - max_flips} more (all in comparison.json).")
            lines.append("")
    return "\n".join(lines)


# --- plots ----------------------------------------------------------------------------------------

def _pyplot():
    from .plots import plt  # matplotlib on the Agg backend, loaded only when plotting

    return plt


def accuracy_plot(c: Comparison, path: str | Path, groups: Sequence[GroupComparison] | None = None,
                  title: str = "Accuracy by subject") -> Path:
    """Horizontal bars: each side's accuracy per group (default: by subject, else overall) with 95% Wilson
    intervals."""
    plt = _pyplot()
    groups = list(c.by_subject if groups is None else groups) or [
        GroupComparison("all", c.fp, c.quant, len(c.right_to_wrong_pairs), len(c.wrong_to_right_pairs))]
    fig, ax = plt.subplots(figsize=(7.5, 0.75 * max(3, len(groups)) + 1.2))
    height = 0.38
    for offset, side, label, color in ((-height / 2, "fp", c.fp_label, "#4C72B0"),
                                       (height / 2, "quant", c.quant_label, "#DD8452")):
        accs = [getattr(g, side) for g in groups]
        values = [100 * (a.value or 0.0) for a in accs]
        errors = [[100 * (a.value - a.interval.low) if a.n else 0 for a in accs],
                  [100 * (a.interval.high - a.value) if a.n else 0 for a in accs]]
        ax.barh([i + offset for i in range(len(groups))], values, height=height, xerr=errors, capsize=3,
                color=color, label=label)
    ax.set_yticks(range(len(groups)), [f"{g.group} (n={g.fp.n})" for g in groups])
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy, % (95% Wilson interval)")
    ax.set_title(title)
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    from .plots import save_figure

    return save_figure(fig, path)


def flips_plot(c: Comparison, path: str | Path) -> Path:
    """Bars of right→wrong and wrong→right pairs, overall and per subject (or level)."""
    plt = _pyplot()
    groups = [GroupComparison("all", c.fp, c.quant, len(c.right_to_wrong_pairs), len(c.wrong_to_right_pairs)),
              *(c.by_subject or c.by_level)]
    fig, ax = plt.subplots(figsize=(7.5, 0.6 * max(3, len(groups)) + 1.2))
    height = 0.38
    for offset, attr, label, color in ((-height / 2, "right_to_wrong", "right → wrong", "#C44E52"),
                                       (height / 2, "wrong_to_right", "wrong → right", "#55A868")):
        counts = [getattr(g, attr) for g in groups]
        bars = ax.barh([i + offset for i in range(len(groups))], counts, height=height, color=color, label=label)
        ax.bar_label(bars, fontsize=7, padding=2)
    ax.set_yticks(range(len(groups)), [g.group for g in groups])
    ax.set_xlabel("pairs")
    ax.set_title(f"Flips from {c.fp_label} to {c.quant_label} (McNemar p = {c.p_value:.3g})")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    from .plots import save_figure

    return save_figure(fig, path)

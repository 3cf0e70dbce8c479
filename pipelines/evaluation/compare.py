"""Full precision vs. quantized: a paired comparison of two sets of graded attempts.

Attempts pair by problem id and sample index. Accuracies are over the *usable* pairs (both sides
present and gradable), so their difference is exactly the paired one; McNemar's exact test uses
the discordant pairs. The quantized attempts that went right → wrong are the failures the judge
diagnoses next. Output length and degenerate-output rates are over all present pairs.

:func:`write_comparison` writes the report files; ``comparison.json`` is written by
:func:`~quantmedic.pipelines.evaluation.comparison_json.to_json` and read back as typed data by
:class:`~quantmedic.pipelines.evaluation.comparison_json.ComparisonSummary`; the figures are in
:mod:`quantmedic.pipelines.evaluation.comparison_figures`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from statistics import NormalDist

from quantmedic.judge.adapters import load_attempts
from quantmedic.judge.degenerate import DEGENERATE_SUBTYPES, detect_degenerate
from quantmedic.judge.metrics import Interval, wilson_interval
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import write_atomic, write_records
from quantmedic.taxonomy.records import Attempt

from quantmedic.pipelines.evaluation.comparison_figures import accuracy_plot, flips_plot, lengths_plot
from quantmedic.pipelines.evaluation.comparison_json import COMPARISON_JSON, to_json
from quantmedic.pipelines.evaluation.grading import attempt_label
from quantmedic.pipelines.evaluation.length_tables import lengths_markdown
from quantmedic.pipelines.evaluation.lengths import LengthSummary

PairKey = tuple[str, int]

# the files :func:`write_comparison` writes (the study's judge and report read them), and COMPARISON_JSON above
COMPARISON_MD = "comparison.md"
ACCURACY_BY_SUBJECT_PNG = "accuracy_by_subject.png"
ACCURACY_BY_LEVEL_PNG = "accuracy_by_level.png"  # only when the problems have levels
FLIPS_PNG = "flips.png"
LENGTHS_PNG = "lengths.png"  # only when either side has reasoning traces (thinking)
FLIPPED_FAILURES = "flipped_failures.jsonl"  # the quantized attempts that went right → wrong
ALL_FAILURES = "failures.jsonl"  # every quantized attempt graded wrong


class PairingError(ValueError):
    """The two sets of attempts do not pair up: a duplicated (problem id, sample index), or no shared one."""


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
    fp_lengths: LengthSummary | None = None  # both None unless either side has thinking
    quant_lengths: LengthSummary | None = None
    fp_execution: str | None = None  # "real kernels", "simulated", "mixed" (both in one side), None (unknown)
    quant_execution: str | None = None

    @property
    def usable(self) -> int:
        return self.fp.n

    @property
    def difference(self) -> float | None:
        """Quantized minus full-precision accuracy, on the usable pairs."""
        return None if not self.usable else (self.quant.correct - self.fp.correct) / self.usable

    @property
    def overall(self) -> GroupComparison:
        """All usable pairs as one group."""
        return GroupComparison("all", self.fp, self.quant, len(self.right_to_wrong_pairs),
                               len(self.wrong_to_right_pairs))

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
            raise PairingError(f"{side}: two attempts for problem {key[0]} sample {key[1]} "
                             f"({index[key].id} and {attempt.id})")
        index[key] = attempt
    return index


def _label(attempts: Sequence[Attempt], default: str) -> str:
    labels = Counter(attempt_label(a) for a in attempts)
    return labels.most_common(1)[0][0] if labels else default


def execution_of(attempts: Sequence[Attempt]) -> str | None:
    """How a side was computed: ``real kernels``, ``simulated``, ``mixed`` or None (not recorded)."""
    kinds = {a.quantization.execution for a in attempts if a.quantization and a.quantization.execution}
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else None)


def simulated_mark(execution: str | None) -> str:
    """`` †`` after the label of a side that was (partly) simulated."""
    return " †" if execution in ("simulated", "mixed") else ""


SIMULATED_NOTE = ("† simulated: quantize-dequantize in a transformers forward pass; the accuracy is the format's, "
                  "the speed and memory are not.")


def _calibrated_labels(fp_attempts: Sequence[Attempt], quant_attempts: Sequence[Attempt]) -> tuple[str, str]:
    """The sides' default labels; two quantized sides calibrated differently also name their calibration
    (``m [gptq 4-bit] (calib gsm8k)`` vs ``m [gptq 4-bit] (calib generations:gsm8k)``)."""
    labels = [_label(fp_attempts, "full precision"), _label(quant_attempts, "quantized")]
    calibrations = [Counter(str(a.quantization.extra["calibration"]) for a in side
                            if a.quantization and a.quantization.extra.get("calibration")).most_common(1)
                    for side in (fp_attempts, quant_attempts)]
    if all(calibrations) and calibrations[0][0][0] != calibrations[1][0][0]:
        labels = [f"{label} (calib {c[0][0]})" for label, c in zip(labels, calibrations)]
    return labels[0], labels[1]


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

    Raises PairingError (a ValueError) when one side holds two attempts with the same key, or nothing pairs up.
    """
    fp_index, quant_index = _index(fp_attempts, "full precision"), _index(quant_attempts, "quantized")
    present = [(fp_index[k], quant_index[k]) for k in fp_index if k in quant_index]
    if not present:
        raise PairingError("no attempt pairs up: the two sets share no (problem id, sample index)")
    usable = [(fp, q) for fp, q in present if fp.correct is not None and q.correct is not None]
    right_to_wrong = tuple((fp, q) for fp, q in usable if fp.correct and not q.correct)
    wrong_to_right = tuple((fp, q) for fp, q in usable if not fp.correct and q.correct)
    unit = "tokens" if all(a.completion_tokens is not None for pair in present for a in pair) else "words"
    lengths = (LengthSummary.of(fp for fp, _ in present), LengthSummary.of(q for _, q in present))
    if not any(s.has_thinking for s in lengths):
        lengths = (None, None)
    default_labels = _calibrated_labels(fp_attempts, quant_attempts)
    return Comparison(
        fp_label=fp_label or default_labels[0], quant_label=quant_label or default_labels[1],
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
        quant_outputs=_outputs([q for _, q in present], unit), fp_lengths=lengths[0], quant_lengths=lengths[1],
        fp_execution=execution_of(fp_attempts), quant_execution=execution_of(quant_attempts))


# --- the Markdown report (the JSON one is in comparison_json) -------------------------------------

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
        f"| {c.fp_label} (full precision){simulated_mark(c.fp_execution)} | {_pct(c.fp)} |",
        f"| {c.quant_label} (quantized){simulated_mark(c.quant_execution)} | {_pct(c.quant)} |", "",
        *([SIMULATED_NOTE, ""] if simulated_mark(c.fp_execution) or simulated_mark(c.quant_execution) else []),
        f"Paired difference (quantized − full precision): {diff}. McNemar's exact test on the "
        f"{len(c.right_to_wrong_pairs) + len(c.wrong_to_right_pairs)} discordant pairs: p = {c.p_value:.4g}.", "",
        "| full precision \\ quantized | right | wrong |", "|---|---|---|",
        f"| right | {c.both_right} | {len(c.right_to_wrong_pairs)} |",
        f"| wrong | {len(c.wrong_to_right_pairs)} | {c.both_wrong} |", "",
    ]
    lines += lengths_markdown([(c.fp_label, _pct(c.fp), c.fp_lengths),
                               (c.quant_label, _pct(c.quant), c.quant_lengths)])
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
                lines.append(f"\n…and {len(pairs) - max_flips} more (all in {COMPARISON_JSON}).")
            lines.append("")
    return "\n".join(lines)


# --- files ----------------------------------------------------------------------------------------

def write_comparison(fp: list[Attempt], quant: list[Attempt], out: Path, *, fp_label: str | None = None,
                     quant_label: str | None = None) -> tuple[Comparison, list[str]]:
    """Compare ``fp`` with ``quant`` and write the report into the folder ``out``; returns the comparison
    and the names of the files written (the ``*_JSON``, ``*_MD``, ``*_PNG`` and failure constants above).

    Raises PairingError (from :func:`compare`) before anything is written when the two sets do not pair up.
    """
    comparison = compare(fp, quant, fp_label=fp_label, quant_label=quant_label)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / COMPARISON_JSON, [json.dumps(to_json(comparison), indent=2, ensure_ascii=False) + "\n"])
    write_atomic(out / COMPARISON_MD, [to_markdown(comparison)])
    written = [COMPARISON_JSON, COMPARISON_MD]
    accuracy_plot(comparison, out / ACCURACY_BY_SUBJECT_PNG,
                  title="Accuracy by subject" if comparison.by_subject else "Accuracy")
    written.append(ACCURACY_BY_SUBJECT_PNG)
    if comparison.by_level:
        accuracy_plot(comparison, out / ACCURACY_BY_LEVEL_PNG, comparison.by_level, title="Accuracy by level")
        written.append(ACCURACY_BY_LEVEL_PNG)
    flips_plot(comparison, out / FLIPS_PNG)
    if comparison.fp_lengths is not None:
        lengths_plot(comparison, fp, quant, out / LENGTHS_PNG)
    write_records(out / FLIPPED_FAILURES, comparison.right_to_wrong)
    write_records(out / ALL_FAILURES, [a for a in quant if a.correct is False])
    written += [FLIPS_PNG, *([LENGTHS_PNG] if comparison.fp_lengths is not None else []), FLIPPED_FAILURES,
                ALL_FAILURES]
    return comparison, written


def load_graded(path: Path) -> list[Attempt]:
    """Graded attempts, one per problem and sample (what compare, evaluate and the study pair up)."""
    attempts = load_attempts(path)
    if all(a.correct is None for a in attempts):
        raise InputError(path, "no graded attempts: grade them first with `quantmedic grade`", field="correct")
    seen: dict[PairKey, Attempt] = {}
    for attempt in attempts:
        key = pair_key(attempt)
        if key in seen:
            raise InputError(path, f"two attempts ({seen[key].id}, {attempt.id}) for problem {key[0]} sample "
                                   f"{key[1]}: give each sample its own sampling.sample_index", field="sampling")
        seen[key] = attempt
    return attempts

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

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from statistics import NormalDist

from quantmedic.judge.adapters import iter_attempts, load_attempts
from quantmedic.judge.degenerate import DEGENERATE_SUBTYPES
from quantmedic.judge.metrics import Interval, wilson_interval
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import write_atomic
from quantmedic.taxonomy.records import Attempt

from quantmedic.pipelines.evaluation.comparison_figures import accuracy_plot, flips_plot, lengths_plot
from quantmedic.pipelines.evaluation.comparison_json import COMPARISON_JSON, json_chunks, to_json  # noqa: F401
from quantmedic.pipelines.evaluation.length_tables import lengths_markdown
from quantmedic.pipelines.evaluation.lengths import LengthSummary
from quantmedic.pipelines.evaluation.pairing import (FULL_PRECISION, QUANTIZED, Brief, DuplicatePair,  # noqa: F401
                                                    FailureSpool, Group, NoGraded, Outputs, Paired, PairingError,
                                                    Read, pair_up)

PairKey = tuple[str, int]
EXACT_UP_TO = 2000  # discordant pairs: mcnemar_exact in exact fractions up to here

# the files :func:`write_comparison` writes (the study's judge and report read them), and COMPARISON_JSON above
COMPARISON_MD = "comparison.md"
ACCURACY_BY_SUBJECT_PNG = "accuracy_by_subject.png"
ACCURACY_BY_LEVEL_PNG = "accuracy_by_level.png"  # only when the problems have levels
FLIPS_PNG = "flips.png"
LENGTHS_PNG = "lengths.png"  # only when either side has reasoning traces (thinking)
FLIPPED_FAILURES = "flipped_failures.jsonl"  # the quantized attempts that went right → wrong
ALL_FAILURES = "failures.jsonl"  # every quantized attempt graded wrong


def pair_key(attempt: Attempt) -> PairKey:
    """What pairs a full-precision attempt with its quantized counterpart: problem id, sample index."""
    return attempt.problem.id, attempt.sampling.sample_index


def mcnemar_exact(right_to_wrong: int, wrong_to_right: int) -> float:
    """Two-sided exact McNemar p-value: twice the smaller binomial(b + c, 1/2) tail, at most 1. Computed in
    exact fractions up to :data:`EXACT_UP_TO` discordant pairs; above (where the exact sum's integers grow
    too large to be quick), in floating point from the largest term down (relative error about 1e-9).

    >>> round(mcnemar_exact(10, 2), 6)   # 2 * (1 + 12 + 66) / 2**12
    0.038574
    >>> mcnemar_exact(3, 3), mcnemar_exact(0, 0)
    (1.0, 1.0)
    """
    if right_to_wrong < 0 or wrong_to_right < 0:
        raise ValueError("counts must be non-negative")
    n, m = right_to_wrong + wrong_to_right, min(right_to_wrong, wrong_to_right)
    if n <= EXACT_UP_TO:
        return float(min(Fraction(1), 2 * Fraction(sum(math.comb(n, k) for k in range(m + 1)), 2 ** n)))
    # the same sum in floating point, from its largest term down, until the terms no longer count
    total, term, k = 0.0, 1.0, m
    while k >= 0 and term > 1e-17 * total:
        total += term
        term *= k / (n - k + 1)
        k -= 1
    top = math.lgamma(n + 1) - math.lgamma(m + 1) - math.lgamma(n - m + 1) - n * math.log(2)
    return min(1.0, 2 * math.exp(top + math.log(total)))


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


def simulated_mark(execution: str | None) -> str:
    """`` †`` after the label of a side that was (partly) simulated."""
    return " †" if execution in ("simulated", "mixed") else ""


SIMULATED_NOTE = ("† simulated: quantize-dequantize in a transformers forward pass; the accuracy is the format's, "
                  "the speed and memory are not.")


def _group(g: Group) -> GroupComparison:
    name, n, fp_right, quant_right, right_to_wrong, wrong_to_right = g
    return GroupComparison(name, Accuracy(fp_right, n), Accuracy(quant_right, n), right_to_wrong, wrong_to_right)


def _outputs(o: Outputs, unit: str) -> OutputStats:
    kinds = dict(o.kinds)
    mean = (o.tokens if unit == "tokens" else o.words) / o.n if o.n else None
    return OutputStats(o.n, mean, unit, Accuracy(sum(kinds.values()), o.n),
                       tuple((k, kinds[k]) for k in DEGENERATE_SUBTYPES if kinds.get(k)))


def comparison_of(p: Paired, *, fp_label: str | None = None, quant_label: str | None = None) -> Comparison:
    """The comparison that the counts of :func:`~quantmedic.pipelines.evaluation.pairing.pair_up` make."""
    unit = "tokens" if p.fp_outputs.all_tokens and p.quant_outputs.all_tokens else "words"
    return Comparison(
        fp_label=fp_label or p.labels[0], quant_label=quant_label or p.labels[1], fp_total=p.fp_total,
        quant_total=p.quant_total, paired=p.present, unpaired_fp=p.fp_keys - p.present,
        unpaired_quant=p.quant_keys - p.present, ungradable_pairs=p.present - p.usable,
        fp=Accuracy(p.fp_right, p.usable), quant=Accuracy(p.quant_right, p.usable), both_right=p.both_right,
        both_wrong=p.both_wrong, right_to_wrong_pairs=p.right_to_wrong, wrong_to_right_pairs=p.wrong_to_right,
        p_value=mcnemar_exact(len(p.right_to_wrong), len(p.wrong_to_right)),
        difference_interval=paired_difference_interval(len(p.right_to_wrong), len(p.wrong_to_right), p.usable),
        by_subject=tuple(map(_group, p.by_subject)), by_level=tuple(map(_group, p.by_level)),
        fp_outputs=_outputs(p.fp_outputs, unit), quant_outputs=_outputs(p.quant_outputs, unit),
        fp_lengths=p.fp_lengths, quant_lengths=p.quant_lengths, fp_execution=p.executions[0],
        quant_execution=p.executions[1])


def compare(fp_attempts: Sequence[Attempt], quant_attempts: Sequence[Attempt], *, fp_label: str | None = None,
            quant_label: str | None = None) -> Comparison:
    """Compare graded full-precision and quantized attempts, paired by problem id and sample index.

    Raises PairingError (a ValueError) when one side holds two attempts with the same key, or nothing pairs up.
    """
    return comparison_of(pair_up(lambda: fp_attempts, lambda: quant_attempts), fp_label=fp_label,
                         quant_label=quant_label)


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

def _write(fp: Read, quant: Read, out: Path, *, fp_label: str | None, quant_label: str | None,
           files: bool) -> tuple[Comparison, list[str]]:
    """Pair the sides (streamed), then write every report file into ``out``; nothing is written (``out`` not
    even made) when they do not pair up. ``files``: the sides are files (keep briefs, require grades)."""
    failures = FailureSpool()
    try:
        keeps = {"keep_fp": Brief.answer_of, "keep_quant": Brief.of} if files else {}
        paired = pair_up(fp, quant, **keeps, on_quant=failures, require_graded=files)
        comparison = comparison_of(paired, fp_label=fp_label, quant_label=quant_label)
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / COMPARISON_JSON, json_chunks(comparison))
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
            lengths_plot(comparison, paired.fp_thinking, paired.quant_thinking, out / LENGTHS_PNG)
        failures.write(out / FLIPPED_FAILURES, out / ALL_FAILURES)
    finally:
        failures.close()
    written += [FLIPS_PNG, *([LENGTHS_PNG] if comparison.fp_lengths is not None else []), FLIPPED_FAILURES,
                ALL_FAILURES]
    return comparison, written


def write_comparison(fp: Sequence[Attempt], quant: Sequence[Attempt], out: Path, *, fp_label: str | None = None,
                     quant_label: str | None = None) -> tuple[Comparison, list[str]]:
    """Compare ``fp`` with ``quant`` and write the report into the folder ``out``; returns the comparison
    and the names of the files written (the ``*_JSON``, ``*_MD``, ``*_PNG`` and failure constants above).

    Raises PairingError (from :func:`compare`) before anything is written when the two sets do not pair up.
    """
    return _write(lambda: fp, lambda: quant, Path(out), fp_label=fp_label, quant_label=quant_label, files=False)


def write_comparison_files(fp: Path, quant: Path, out: Path, *, fp_label: str | None = None,
                           quant_label: str | None = None) -> tuple[Comparison, list[str]]:
    """:func:`write_comparison` of two files of graded attempts, each streamed (memory stays bounded: a few
    numbers per full-precision attempt); the comparison's flips hold :class:`Brief` records, not attempts.

    A file without any grade, or with two attempts for one problem and sample, is an :class:`InputError` naming
    it (as :func:`load_graded`); a PairingError when nothing pairs up."""
    paths = {FULL_PRECISION: Path(fp), QUANTIZED: Path(quant)}
    try:
        return _write(lambda: iter_attempts(fp), lambda: iter_attempts(quant), Path(out), fp_label=fp_label,
                      quant_label=quant_label, files=True)
    except NoGraded as error:
        raise InputError(paths[error.side], "no graded attempts: grade them first with `quantmedic grade`",
                         field="correct") from None
    except DuplicatePair as error:
        raise InputError(paths[error.side], f"two attempts ({error.first}, {error.second}) for problem "
                                            f"{error.key[0]} sample {error.key[1]}: give each sample its own "
                                            "sampling.sample_index", field="sampling") from None


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

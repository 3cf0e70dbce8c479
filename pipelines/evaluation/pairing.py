"""Two sides' attempts paired by problem id and sample index in one pass over each: the counts that
:func:`~quantmedic.pipelines.evaluation.compare.compare` and ``quantmedic compare`` report.

The full-precision side is read first and kept as a few numbers per attempt (outcome, subject, level,
lengths, degenerate kind, and what a flip's report shows of it); the quantized side then streams past
it, each pair counted as it meets its partner. Neither side's attempts are held (unless the caller's
``keep`` keeps them), so a million pairs fit in bounded memory. Sums and counts are exact; the
flips come out in the full-precision side's order, as they would from a join over two lists.
"""

from __future__ import annotations

import tempfile
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantmedic.judge.degenerate import detect_degenerate
from quantmedic.taxonomy.jsonl import dump_line, write_atomic
from quantmedic.taxonomy.records import Attempt

from quantmedic.pipelines.evaluation.grade_summary import attempt_label
from quantmedic.pipelines.evaluation.lengths import LengthColumns, LengthSummary, length_numbers

FULL_PRECISION, QUANTIZED = "full precision", "quantized"
Read = Callable[[], Iterable[Attempt]]
"""A side: a function that reads its attempts anew at each call."""
Keep = Callable[[Attempt], Any]
"""What a flip keeps of an attempt: the attempt itself, or its :class:`Brief`."""


class PairingError(ValueError):
    """The two sets of attempts do not pair up: a duplicated (problem id, sample index), or no shared one."""


class DuplicatePair(PairingError):
    """One side holds two attempts for one problem and sample."""

    def __init__(self, side: str, key: tuple[str, int], first: str, second: str):
        super().__init__(f"{side}: two attempts for problem {key[0]} sample {key[1]} ({first} and {second})")
        self.side, self.key, self.first, self.second = side, key, first, second


class NoGraded(PairingError):
    """One side holds no graded attempt (checked only when asked)."""

    def __init__(self, side: str):
        super().__init__(f"{side}: no graded attempts")
        self.side = side


@dataclass(frozen=True, slots=True)
class BriefProblem:
    id: str
    source_id: str | None
    subject: str | None
    level: int | str | None
    reference_answer: str | None


@dataclass(frozen=True, slots=True)
class BriefSampling:
    sample_index: int


@dataclass(frozen=True, slots=True)
class Brief:
    """What the reports show of a flipped attempt (``comparison.json``'s flips, ``comparison.md``'s table), in an
    attempt's shape: what a comparison of files keeps instead of the attempt (the full-precision side: id and
    answer only)."""

    id: str
    final_answer: str | None
    problem: BriefProblem | None = None
    sampling: BriefSampling | None = None

    @classmethod
    def of(cls, a: Attempt) -> Brief:
        p = a.problem
        return cls(a.id, a.final_answer, BriefProblem(p.id, p.source_id, p.subject, p.level, p.reference_answer),
                   BriefSampling(a.sampling.sample_index))

    @classmethod
    def answer_of(cls, a: Attempt) -> Brief:
        return cls(a.id, a.final_answer)


def _key(attempt: Attempt) -> str:
    """The pair key, compactly: ``"<sample index>:<problem id>"`` (unambiguous: the index has no colon)."""
    return f"{attempt.sampling.sample_index}:{attempt.problem.id}"


def _unkey(key: str) -> tuple[str, int]:
    index, problem = key.split(":", 1)
    return problem, int(index)


def _kind(attempt: Attempt) -> str | None:
    degeneracy = detect_degenerate(attempt)
    return None if degeneracy is None else degeneracy.kind


class _Side:
    """What is counted of every attempt of one side: totals, labels, calibrations, executions."""

    def __init__(self, name: str):
        self.name, self.total, self.graded = name, 0, 0
        self.labels: Counter = Counter()
        self.calibrations: Counter = Counter()
        self.executions: set[str] = set()
        self.duplicate: tuple[str, str | None, str] | None = None  # key, first id (when known), second id

    def add(self, a: Attempt) -> None:
        self.total += 1
        self.graded += a.correct is not None
        self.labels[attempt_label(a)] += 1
        q = a.quantization
        if q and q.extra.get("calibration"):
            self.calibrations[str(q.extra["calibration"])] += 1
        if q and q.execution:
            self.executions.add(q.execution)

    @property
    def execution(self) -> str | None:
        """``real kernels``, ``simulated``, ``mixed`` (both) or None (not recorded)."""
        return next(iter(self.executions)) if len(self.executions) == 1 else ("mixed" if self.executions else None)

    def label(self, default: str) -> str:
        return self.labels.most_common(1)[0][0] if self.labels else default


@dataclass(frozen=True)
class Outputs:
    """One side's outputs over the present pairs: how many, whether all record ``completion_tokens``, their sum,
    the whitespace-separated words' sum, and the degenerate ones by kind (in order of appearance)."""

    n: int
    all_tokens: bool
    tokens: int
    words: int
    kinds: tuple[tuple[str, int], ...]


class _OutputTally:
    def __init__(self) -> None:
        self.n = self.tokens = self.words = 0
        self.all_tokens = True
        self.kinds: Counter = Counter()

    def add(self, tokens: int | None, words: int, kind: str | None) -> None:
        self.n += 1
        self.all_tokens = self.all_tokens and tokens is not None
        self.tokens += tokens or 0
        self.words += words
        if kind is not None:
            self.kinds[kind] += 1

    def done(self) -> Outputs:
        return Outputs(self.n, self.all_tokens, self.tokens, self.words, tuple(self.kinds.items()))


Group = tuple[str, int, int, int, int, int]
"""One subject or level over the usable pairs: its name, pairs, full-precision right, quantized right,
right → wrong, wrong → right."""


def _ordered(groups: dict[object, list[int]]) -> tuple[Group, ...]:
    """Integers first (ascending), then the others by name, then none; () when no pair has a value."""
    if all(value is None for value in groups):
        return ()

    def order(value: object) -> tuple:
        return (value is None, not isinstance(value, int), value if isinstance(value, int) else str(value))

    return tuple(("(none)" if v is None else str(v), *counts)  # type: ignore[misc]
                 for v, counts in sorted(groups.items(), key=lambda item: order(item[0])))


class _FullPrecision(_Side):
    """The full-precision side, one row per distinct key: a few numbers, and what a flip keeps."""

    def __init__(self, keep: Keep):
        super().__init__(FULL_PRECISION)
        self.keep, self.rows = keep, {}
        self.correct, self.matched = bytearray(), bytearray()  # correct: 0, 1, or 2 for None
        self.tokens, self.words = array("q"), array("q")  # tokens: -1 for None
        self.subject: list = []  # and level, degenerate kind, what a flip keeps: one per row, as the others
        self.level, self.kind, self.kept = [], [], []  # type: ignore[var-annotated]
        self.lengths = LengthColumns()
        self._values: dict = {}

    def read(self, attempts: Iterable[Attempt]) -> None:
        for a in attempts:
            self.add(a)
            key = _key(a)
            if key in self.rows:
                self.duplicate = self.duplicate or (key, self.kept[self.rows[key]].id, a.id)
                continue
            self.rows[key] = len(self.correct)
            self.correct.append(2 if a.correct is None else int(a.correct))
            self.matched.append(0)
            self.tokens.append(-1 if a.completion_tokens is None else a.completion_tokens)
            self.words.append(len(a.solution_text.split()))
            self.subject.append(self._values.setdefault(a.problem.subject, a.problem.subject))
            self.level.append(self._values.setdefault(a.problem.level, a.problem.level))
            self.kind.append(_kind(a))
            self.kept.append(self.keep(a))
            self.lengths.append(length_numbers(a))


@dataclass(frozen=True)
class Paired:
    """What :func:`pair_up` counted. Pairs are present on both sides, usable when both are graded; flips are
    ``(kept full-precision, kept quantized)`` pairs in the full-precision side's order; lengths are over the
    present pairs (both None unless either side has thinking), ``*_thinking`` the present traces' thinking
    tokens and outcome (for the figure)."""

    fp_total: int
    quant_total: int
    fp_keys: int
    quant_keys: int
    present: int
    usable: int
    fp_right: int
    quant_right: int
    both_right: int
    both_wrong: int
    right_to_wrong: tuple[tuple[Any, Any], ...]
    wrong_to_right: tuple[tuple[Any, Any], ...]
    by_subject: tuple[Group, ...]
    by_level: tuple[Group, ...]
    fp_outputs: Outputs
    quant_outputs: Outputs
    fp_lengths: LengthSummary | None
    quant_lengths: LengthSummary | None
    fp_thinking: tuple[tuple[int, bool | None], ...]
    quant_thinking: tuple[tuple[int, bool | None], ...]
    labels: tuple[str, str]
    executions: tuple[str | None, str | None]


class _Pairs:
    """The quantized side streamed past the full-precision rows: every pair counted as it meets its partner."""

    def __init__(self, fp: _FullPrecision, keep: Keep, on_quant: Callable[[Attempt, int | None], None] | None):
        self.fp, self.keep, self.on_quant = fp, keep, on_quant
        self.side = _Side(QUANTIZED)
        self.unpaired: set[str] = set()
        self.present = self.usable = self.fp_right = self.quant_right = self.both_right = self.both_wrong = 0
        self.flips: dict[bool, list] = {True: [], False: []}  # right → wrong (True), wrong → right (False)
        self.groups: tuple[dict, dict] = ({}, {})  # by subject, by level
        self.outputs = (_OutputTally(), _OutputTally())
        self.lengths = LengthColumns()

    def read(self, attempts: Iterable[Attempt]) -> None:
        fp = self.fp
        for a in attempts:
            self.side.add(a)
            key = _key(a)
            row = fp.rows.get(key)
            flipped = False
            if row is not None and not fp.matched[row]:
                fp.matched[row] = 1
                flipped = self._pair(row, a)
            elif row is not None or key in self.unpaired:
                self.side.duplicate = self.side.duplicate or (key, None, a.id)
            else:
                self.unpaired.add(key)
            if self.on_quant is not None:
                self.on_quant(a, row if flipped else None)

    def _pair(self, row: int, a: Attempt) -> bool:
        """Count one present pair; whether it went right → wrong."""
        fp = self.fp
        self.present += 1
        self.outputs[0].add(None if fp.tokens[row] < 0 else fp.tokens[row], fp.words[row], fp.kind[row])
        self.outputs[1].add(a.completion_tokens, len(a.solution_text.split()), _kind(a))
        self.lengths.append(length_numbers(a))
        if fp.correct[row] == 2 or a.correct is None:
            return False
        right, quant_right = fp.correct[row] == 1, a.correct
        self.usable += 1
        self.fp_right += right
        self.quant_right += quant_right
        self.both_right += right and quant_right
        self.both_wrong += not right and not quant_right
        for groups, value in zip(self.groups, (fp.subject[row], fp.level[row])):
            counts = groups.setdefault(value, [0, 0, 0, 0, 0])
            for i, add in enumerate((1, right, quant_right, right and not quant_right, quant_right and not right)):
                counts[i] += add
        if right != quant_right:
            self.flips[right].append((row, fp.kept[row], self.keep(a)))
        return right and not quant_right


def _present(fp: _FullPrecision) -> LengthColumns:
    present = LengthColumns()
    for numbers, matched in zip(fp.lengths, fp.matched):
        if matched:
            present.append(numbers)
    return present


def _lengths(fp: _FullPrecision, pairs: _Pairs) -> tuple[LengthColumns, LengthColumns] | None:
    """The present pairs' length numbers of both sides, when either has thinking."""
    if not (fp.lengths.any_thinking() or pairs.lengths.any_thinking()):
        return None
    fp_present = _present(fp)
    if not any(r.thinking_tokens is not None for side in (fp_present, pairs.lengths) for r in side):
        return None
    return fp_present, pairs.lengths


def _first_quant_id(quant: Read, key: str) -> str:
    return next(a.id for a in quant() if _key(a) == key)


def _check(side: _Side, require_graded: bool, read: Read | None = None) -> None:
    if require_graded and not side.graded:
        raise NoGraded(side.name)
    if side.duplicate is not None:
        key, first, second = side.duplicate
        raise DuplicatePair(side.name, _unkey(key), first or _first_quant_id(read, key), second)  # type: ignore


def _calibrated_labels(fp: _Side, quant: _Side) -> tuple[str, str]:
    """The sides' default labels; two quantized sides calibrated differently also name their calibration
    (``m [gptq 4-bit] (calib gsm8k)`` vs ``m [gptq 4-bit] (calib generations:gsm8k)``)."""
    labels = [fp.label("full precision"), quant.label("quantized")]
    calibrations = [side.calibrations.most_common(1) for side in (fp, quant)]
    if all(calibrations) and calibrations[0][0][0] != calibrations[1][0][0]:
        labels = [f"{label} (calib {c[0][0]})" for label, c in zip(labels, calibrations)]
    return labels[0], labels[1]


def pair_up(fp_read: Read, quant_read: Read, *, keep_fp: Keep = lambda a: a, keep_quant: Keep = lambda a: a,
            on_quant: Callable[[Attempt, int | None], None] | None = None, require_graded: bool = False) -> Paired:
    """Pair the two sides (each read once; the quantized side again only to name a duplicate) and count.

    ``on_quant(attempt, row)`` sees each quantized attempt as it streams past: ``row`` is its full-precision
    partner's row when the pair went right → wrong (else None). Raises :class:`NoGraded` (a side without any
    grade, when ``require_graded``), :class:`DuplicatePair`, or :class:`PairingError` when nothing pairs up."""
    fp = _FullPrecision(keep_fp)
    fp.read(fp_read())
    _check(fp, require_graded)
    pairs = _Pairs(fp, keep_quant, on_quant)
    pairs.read(quant_read())
    _check(pairs.side, require_graded, quant_read)
    if not pairs.present:
        raise PairingError("no attempt pairs up: the two sets share no (problem id, sample index)")
    lengths = _lengths(fp, pairs)
    summaries = (None, None) if lengths is None else tuple(LengthSummary.of_numbers(side) for side in lengths)
    thinking = ((), ()) if lengths is None else tuple(
        tuple((r.thinking_tokens, r.correct) for r in side if r.thinking_tokens is not None) for side in lengths)
    flips = [tuple((fp_kept, q_kept) for _, fp_kept, q_kept in sorted(pairs.flips[way], key=lambda f: f[0]))
             for way in (True, False)]
    return Paired(fp.total, pairs.side.total, len(fp.rows), len(pairs.unpaired) + pairs.present, pairs.present,
                  pairs.usable, pairs.fp_right, pairs.quant_right, pairs.both_right, pairs.both_wrong, flips[0],
                  flips[1], _ordered(pairs.groups[0]), _ordered(pairs.groups[1]), pairs.outputs[0].done(),
                  pairs.outputs[1].done(), summaries[0], summaries[1], thinking[0], thinking[1],
                  _calibrated_labels(fp, pairs.side), (fp.execution, pairs.side.execution))


class FailureSpool:
    """The quantized attempts graded wrong, and those of them that went right → wrong, spooled to temporary files
    as they stream past (:func:`pair_up`'s ``on_quant``), then written out atomically: the failures in the
    quantized side's order, the flips in the full-precision side's."""

    def __init__(self) -> None:
        self.failures, self.flipped = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        self.rows, self.offsets = array("q"), array("q")  # of each flip: its full-precision row, where it starts

    def __call__(self, attempt: Attempt, flip_row: int | None) -> None:
        if attempt.correct is not False:
            return
        line = dump_line(attempt).encode("utf-8")
        self.failures.write(line)
        if flip_row is not None:
            self.rows.append(flip_row)
            self.offsets.append(self.flipped.tell())
            self.flipped.write(line)

    def write(self, flipped_path: Path, failures_path: Path) -> None:
        def flipped() -> Iterator[str]:
            for i in sorted(range(len(self.rows)), key=self.rows.__getitem__):
                self.flipped.seek(self.offsets[i])
                yield self.flipped.readline().decode("utf-8")

        write_atomic(flipped_path, flipped())
        self.failures.seek(0)
        write_atomic(failures_path, (line.decode("utf-8") for line in self.failures))

    def close(self) -> None:
        self.failures.close()
        self.flipped.close()

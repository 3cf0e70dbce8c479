"""``quantmedic grade --out``, resumable and streamed: graded attempts go to the output as they come, a
rerun grades only what is missing, and memory stays bounded however many attempts there are.

Each graded attempt is appended to ``--out`` and flushed at once (fsynced at most every second and
at the end), so a run killed at any point, ``kill -9`` included, loses nothing already graded. A
rerun keeps the graded attempts already in ``--out`` that belong to the input (same attempt id: the
problem, the steps, the model and the sample) and grades the rest; a line torn by a crash is left
out. When every attempt is graded the file is rewritten atomically, in the input's order. An output
that holds anything else (records that are not attempts, or attempts that are not in the input) is
refused before any grading, and is left as it is.

The input is read in passes (its ids; the grading; the rewrite), never held: what is kept is where each
attempt's graded line lies in ``--out`` (an offset per id), the attempts in flight, and counts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import (dump_line, open_input, parse_json_line, read_records, repair_tail,
                                      validate_record, write_atomic)
from quantmedic.taxonomy.locks import exclusive_output
from quantmedic.taxonomy.records import Attempt

from .grade_summary import Agreement, GradingSummary, agreement_of, summarize
from .grading import iter_graded

FSYNC_EVERY = 1.0  # seconds

Attempts = Sequence[Attempt] | Callable[[], Iterable[Attempt]]
"""The input: a sequence, or a function that reads the attempts anew each time it is called (a file, streamed)."""


@dataclass(frozen=True)
class GradeRun:
    """What :func:`grade_into` did: ``total`` attempts written to ``out`` in input order, ``kept`` of them graded
    by an earlier run; the summaries per model label; the agreement with the input's labels when asked."""

    out: Path
    total: int
    kept: int
    summaries: tuple[GradingSummary, ...]
    agreement: Agreement | None = None

    @property
    def graded(self) -> list[Attempt]:
        """Every graded attempt, in input order, read back from ``out`` (all in memory: for small runs)."""
        return read_records(self.out, Attempt)


@dataclass(frozen=True)
class Earlier:
    """The attempts already in ``out``: where the line of each graded one starts, and the ids of the others."""

    graded: dict[str, int]
    ungraded: dict[str, int]


def _lines(handle) -> Iterator[tuple[int, int, bytes]]:
    """``(line number, offset, bytes)`` of each complete line (a last line without its newline was torn)."""
    offset = 0
    for number, raw in enumerate(handle, start=1):
        if not raw.endswith(b"\n"):
            return
        yield number, offset, raw
        offset += len(raw)


def earlier_grades(out: Path) -> Earlier:
    """The attempts already in ``out`` (one pass, no record kept); anything that is not an attempt is an error."""
    graded: dict[str, int] = {}
    ungraded: dict[str, int] = {}
    if not out.exists():
        return Earlier(graded, ungraded)
    try:
        with open_input(out) as handle:
            for number, offset, raw in _lines(handle):
                if (obj := parse_json_line(raw, out, number)) is not None:
                    attempt = validate_record(Attempt, obj, out, number)
                    (graded if attempt.grading is not None else ungraded)[attempt.id] = offset
                    (ungraded if attempt.grading is not None else graded).pop(attempt.id, None)
    except InputError as error:
        raise InputError(out, f"exists and is not a graded-attempts file ({error.message}); choose another --out",
                         line=error.line, field=error.field) from None
    return Earlier(graded, ungraded)


def _line_at(out: Path, offset: int) -> int:
    with out.open("rb") as handle:
        return handle.read(offset).count(b"\n") + 1


def _distinct(attempts: Callable[[], Iterable[Attempt]], out: Path, earlier: Earlier) -> int:
    """How many distinct attempts the input holds; an earlier attempt in ``out`` that is not one of them is an
    error (``out`` was graded from another input)."""
    ids = {attempt.id for attempt in attempts()}
    foreign = [offset for held in (earlier.graded, earlier.ungraded) for i, offset in held.items() if i not in ids]
    if foreign:
        raise InputError(out, f"holds {len(foreign)} attempts that are not in the input (it was graded from another "
                              "input); choose another --out, or remove it to grade anew", line=_line_at(out, min(foreign)))
    return len(ids)


class _Appender:
    """Appends graded attempts to the output as they come: flushed at once, fsynced at most every second; notes
    where each line starts."""

    def __init__(self, handle, where: dict[str, int]):
        self.handle, self.where, self.synced = handle, where, time.monotonic()

    def __call__(self, attempt: Attempt) -> None:
        self.where[attempt.id] = self.handle.tell()
        self.handle.write(dump_line(attempt).encode("utf-8"))
        self.handle.flush()
        if time.monotonic() - self.synced >= FSYNC_EVERY:
            self.sync()

    def sync(self) -> None:
        os.fsync(self.handle.fileno())
        self.synced = time.monotonic()


def _grade_missing(attempts: Callable[[], Iterable[Attempt]], out: Path, where: dict[str, int], *, workers: int,
                   timeout: float, progress: Callable[[int], None] | None) -> list[str]:
    """Grade each input attempt whose id is not in ``where`` yet (once per id), appending it to ``out``; the ids
    of the input, in its order."""
    order: list[str] = []

    def todo() -> Iterator[Attempt]:
        for attempt in attempts():
            order.append(attempt.id)
            if attempt.id not in where:
                where[attempt.id] = -1  # in flight: a repeat of it is not graded twice
                yield attempt

    repair_tail(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("ab") as handle, closing(iter_graded(todo(), workers=workers, timeout=timeout)) as graded:
        append = _Appender(handle, where)
        for done, (_, attempt) in enumerate(graded, start=1):
            append(attempt)
            if progress is not None:
                progress(done)
        append.sync()
    return order


def _rewrite(out: Path, order: Iterable[str], where: dict[str, int]) -> None:
    """Rewrite ``out`` atomically with the graded line of each id of ``order``, in that order (bytes copied)."""
    with out.open("rb") as handle:
        def lines() -> Iterator[str]:
            for attempt_id in order:
                handle.seek(where[attempt_id])
                yield handle.readline().decode("utf-8")

        write_atomic(out, lines())


def _written(out: Path) -> Iterator[Attempt]:
    with out.open("rb") as handle:
        yield from (Attempt.model_validate_json(raw) for raw in handle)


def grade_into(attempts: Attempts, out: Path, *, workers: int = 2, timeout: float = 5.0,
               progress: Callable[[int, int], None] | None = None, check_labels: bool = False) -> GradeRun:
    """Grade the attempts not yet graded in ``out``, appending each as it comes, then rewrite ``out`` atomically
    with every attempt in input order (see the module docstring). ``progress(done, total)`` counts distinct
    attempts, those already graded included. ``check_labels``: also the agreement of the grades with the
    labels the input carried."""
    out = Path(out)
    read = attempts if callable(attempts) else (lambda: attempts)
    with exclusive_output(out, "graded attempts file"):
        earlier = earlier_grades(out)
        total = _distinct(read, out, earlier)
        where, kept = earlier.graded, len(earlier.graded)
        del earlier
        if progress is not None:
            progress(kept, total)
        order = _grade_missing(read, out, where, workers=workers, timeout=timeout,
                               progress=None if progress is None else (lambda n: progress(kept + n, total)))
        _rewrite(out, order, where)
        written = len(order)
        del order, where
        summaries = tuple(summarize(_written(out)))
        labels = agreement_of(zip(read(), _written(out))) if check_labels else None
    return GradeRun(out, written, kept, summaries, labels)

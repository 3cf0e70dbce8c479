"""``quantmedic grade --out``, resumable: graded attempts go to the output as they come, and a rerun
grades only what is missing.

Each graded attempt is appended to ``--out`` and flushed at once (fsynced at most every second and
at the end), so a run killed at any point, ``kill -9`` included, loses nothing already graded. A
rerun keeps the graded attempts already in ``--out`` that belong to the input (same attempt id: the
problem, the steps, the model and the sample) and grades the rest; a line torn by a crash is left
out. When every attempt is graded the file is rewritten atomically, in the input's order. An output
that holds anything else (records that are not attempts, or attempts that are not in the input) is
refused before any grading, and is left as it is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import (dump_line, open_input, parse_json_line, repair_tail, validate_record,
                                      write_records)
from quantmedic.taxonomy.locks import exclusive_output
from quantmedic.taxonomy.records import Attempt

from .grading import grade_attempts

FSYNC_EVERY = 1.0  # seconds


@dataclass(frozen=True)
class GradeRun:
    """What :func:`grade_into` did: every input attempt graded (input order), and how many were already done."""

    graded: list[Attempt]
    kept: int


def _records(out: Path) -> list[tuple[int, Attempt]]:
    """The attempts on the complete lines of ``out`` (a last line without its newline was torn by a crash)."""
    with open_input(out) as handle:
        lines = handle.read().split(b"\n")[:-1]
    parsed = ((number, parse_json_line(raw, out, number)) for number, raw in enumerate(lines, start=1))
    return [(number, validate_record(Attempt, obj, out, number)) for number, obj in parsed if obj is not None]


def earlier_grades(out: Path, ids: set[str]) -> dict[str, Attempt]:
    """The graded attempts already in ``out``, by id; anything that is not an attempt of the input is an error."""
    if not out.exists():
        return {}
    try:
        records = _records(out)
    except InputError as error:
        raise InputError(out, f"exists and is not a graded-attempts file ({error.message}); choose another --out",
                         line=error.line, field=error.field) from None
    foreign = [number for number, attempt in records if attempt.id not in ids]
    if foreign:
        raise InputError(out, f"holds {len(foreign)} attempts that are not in the input (it was graded from another "
                              "input); choose another --out, or remove it to grade anew", line=foreign[0])
    return {a.id: a for _, a in records if a.grading is not None}


class _Appender:
    """Appends graded attempts to the output as they come: flushed at once, fsynced at most every second."""

    def __init__(self, handle):
        self.handle, self.synced = handle, time.monotonic()

    def __call__(self, _index: int, attempt: Attempt) -> None:
        self.handle.write(dump_line(attempt).encode("utf-8"))
        self.handle.flush()
        if time.monotonic() - self.synced >= FSYNC_EVERY:
            self.sync()

    def sync(self) -> None:
        os.fsync(self.handle.fileno())
        self.synced = time.monotonic()


def grade_into(attempts: Sequence[Attempt], out: Path, *, workers: int = 2, timeout: float = 5.0,
               progress: Callable[[int, int], None] | None = None) -> GradeRun:
    """Grade the attempts not yet graded in ``out``, appending each as it comes, then rewrite ``out`` atomically
    with every attempt in input order (see the module docstring). ``progress(done, total)`` counts distinct
    attempts, those already graded included."""
    out = Path(out)
    with exclusive_output(out, "graded attempts file"):
        earlier = earlier_grades(out, {a.id for a in attempts})
        kept = len(earlier)
        todo = list({a.id: a for a in attempts if a.id not in earlier}.values())  # one grade per attempt id
        total = kept + len(todo)
        if progress is not None:
            progress(kept, total)
        if todo:
            repair_tail(out)
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("ab") as handle:
                append = _Appender(handle)
                done = grade_attempts(todo, workers=workers, timeout=timeout, on_graded=append,
                                      progress=None if progress is None else (lambda n, _: progress(kept + n, total)))
                append.sync()
            earlier.update((a.id, a) for a in done)
        graded = [earlier[a.id] for a in attempts]
        write_records(out, graded)
    return GradeRun(graded, kept)

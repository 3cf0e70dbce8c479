"""The verdicts file of ``quantmedic judge``, written as the verdicts come, in bounded memory.

Each verdict is appended to a *partial* file beside the output (``.<name>.partial``) as soon as it is
decided; at the end the output is rewritten once, atomically, from the earlier output and the
partial (:func:`fold`), and the partial removed. A run killed at any point leaves the output as it
was and a partial that the next run folds in first (a half-written last line is cut), so nothing
decided is lost. Folding keeps one rule: a verdict already written is never replaced by a worse one
(this run's *unscored* verdict does not replace an earlier ``ok``, which stays where it was).

Memory per item is an id and a flag (a million items: well under 200 MB); lines are copied as text.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple
from pathlib import Path

from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import dump_line, open_input, parse_json_line, repair_tail, validate_record, write_atomic
from quantmedic.taxonomy.records import Verdict

FLUSH_EVERY = 256
"""Verdict lines between flushes of the partial file."""


def partial_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


class Row(NamedTuple):
    """What is read of one verdict line."""

    id: str
    attempt_id: str | None
    status: str
    config: str | None
    line: str


def scan(path: Path) -> Iterator[Row]:
    """A :class:`Row` for each verdict line of ``path``: the first line is checked as a full
    :class:`Verdict`, the others for the fields read here (a file of another kind is refused at once)."""
    with open_input(path) as handle:
        for number, raw in enumerate(handle, 1):
            data = parse_json_line(raw, path, number)
            if data is None:
                continue
            line = raw.decode("utf-8")
            if number == 1:
                validate_record(Verdict, data, path, number)
            if not isinstance(data, dict) or not isinstance(data.get("id"), str) or "status" not in data:
                raise InputError(path, "exists and is not a verdicts file; choose another --out", line=number,
                                 field="id")
            attempt = data.get("attempt")
            yield Row(data["id"], attempt.get("id") if isinstance(attempt, dict) else None, data["status"],
                      data.get("config"), line if line.endswith("\n") else line + "\n")


def category_of(line: str) -> str:
    """The category of a verdict line, or ``unscored``."""
    data = json.loads(line)
    return str(data.get("category")) if data.get("status") == "ok" else "unscored"


def check_verdicts_file(out: Path) -> None:
    """Refuse an ``out`` that exists and is not a verdicts file (before anything is judged)."""
    if out.exists():
        try:
            next(scan(out), None)
        except InputError as error:
            raise InputError(out, f"exists and is not a verdicts file ({error}); choose another --out") from None


def done_ids(out: Path, config: str) -> set[str]:
    """Ids of the attempts whose verdict in ``out`` is ``ok`` under this configuration: a rerun has nothing to
    ask for them."""
    if not out.exists():
        return set()
    return {row.attempt_id for row in scan(out) if row.status == "ok" and row.config == config}


class VerdictLog:
    """Appends this run's verdicts to the partial file of ``out``."""

    def __init__(self, out: Path):
        self.path = partial_path(out)
        repair_tail(self.path)
        self._handle = open(self.path, "a", encoding="utf-8")
        self._unflushed = 0

    def write(self, verdict: Verdict) -> None:
        self._handle.write(dump_line(verdict))
        self._unflushed += 1
        if self._unflushed >= FLUSH_EVERY:
            self._handle.flush()
            self._unflushed = 0

    def close(self) -> None:
        """Close the partial file; an empty one (nothing decided: a run that stopped at once) is removed."""
        self._handle.close()
        if self.path.stat().st_size == 0:
            self.path.unlink()


@dataclass
class Folded:
    """What :func:`fold` wrote: earlier verdicts not redone (``kept``), this run's verdicts (``new``),
    earlier ``ok`` verdicts kept in place of this run's unscored ones (``held``), and the categories of
    this run's items (new and held)."""

    kept: int = 0
    new: int = 0
    held: int = 0
    categories: Counter = field(default_factory=Counter)


def fold(out: Path) -> Folded:
    """Rewrite ``out`` (atomically) from itself and its partial file, then remove the partial."""
    partial = partial_path(out)
    folded = Folded()
    if not partial.exists():
        return folded
    repair_tail(partial)
    new_ok = {row.id: row.status == "ok" for row in scan(partial)}
    held: set[str] = set()

    def lines() -> Iterator[str]:
        if out.exists():
            for row in scan(out):
                if row.id not in new_ok:
                    folded.kept += 1
                elif not new_ok[row.id] and row.status == "ok":
                    held.add(row.id)
                    folded.categories[category_of(row.line)] += 1
                else:
                    continue
                yield row.line
        for row in scan(partial):
            if row.id not in held:
                folded.new += 1
                folded.categories[category_of(row.line)] += 1
                yield row.line

    if new_ok:
        write_atomic(out, lines())
    partial.unlink()
    folded.held = len(held)
    return folded

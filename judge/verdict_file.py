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
from typing import Any, NamedTuple
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

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
            if (row := _row(raw, path, number)) is not None:
                yield row


def _row(raw: bytes, path: Path, number: int) -> Row | None:
    """The :class:`Row` of line ``number`` (None for a blank line): see :func:`scan`."""
    data = parse_json_line(raw, path, number)
    if data is None:
        return None
    line = raw.decode("utf-8")
    if number == 1:
        validate_record(Verdict, data, path, number)
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or "status" not in data:
        raise InputError(path, "exists and is not a verdicts file; choose another --out", line=number,
                         field="id")
    attempt = data.get("attempt")
    return Row(data["id"], attempt.get("id") if isinstance(attempt, dict) else None, data["status"],
               data.get("config"), line if line.endswith("\n") else line + "\n")


class _AttemptRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: Any = None


class _DoneFields(BaseModel):
    """What :func:`done_ids` reads of a verdict line, the fields :func:`scan` requires included; pydantic-core's
    JSON parser skips the rest (in any order) without building it."""

    model_config = ConfigDict(extra="ignore")
    id: str
    attempt: _AttemptRef
    status: Any
    config: Any = None


def _done_fields(raw: bytes, path: Path, number: int) -> tuple[Any, Any, Any] | None:
    """``(attempt id, status, config)`` of one verdict line, as :func:`scan` reads them (None: a blank line). A
    line past the first is read by :class:`_DoneFields`; the first, and any line that cannot be read so (not
    JSON, a field missing or of another type), as :func:`scan` reads it, which refuses what is wrong."""
    if number > 1:
        try:
            fields = _DoneFields.model_validate_json(raw)
            return fields.attempt.id, fields.status, fields.config
        except ValidationError:
            pass
    row = _row(raw, path, number)
    return None if row is None else (row.attempt_id, row.status, row.config)


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
    done: set[str] = set()
    with open_input(out) as handle:
        for number, raw in enumerate(handle, 1):
            fields = _done_fields(raw, out, number)
            if fields is not None and fields[1] == "ok" and fields[2] == config:
                done.add(fields[0])
    return done


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

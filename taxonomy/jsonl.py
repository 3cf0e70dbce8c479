"""JSON Lines readers and writers for the shared records.

Readers raise :class:`InputError` naming the file, the 1-based line and the field; writers write to a
temporary file in the same folder and rename it into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from .errors import InputError, pydantic_error_field

M = TypeVar("M", bound=BaseModel)


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line; bad JSON raises :class:`InputError`."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(path, f"not valid JSON ({exc.msg} at column {exc.colno})", line=number) from None
            if not isinstance(obj, dict):
                raise InputError(path, f"expected a JSON object, got {type(obj).__name__}", line=number)
            yield number, obj


def validate_record(model: type[M], obj: dict, path: str | Path, line: int | None) -> M:
    """Validate one object as ``model``; the first problem becomes an :class:`InputError`."""
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(path, first["msg"], line=line, field=pydantic_error_field(first)) from None


def read_records(path: str | Path, model: type[M]) -> list[M]:
    """Read every line of a JSONL file as ``model``."""
    return [validate_record(model, obj, path, number) for number, obj in iter_json_lines(path)]


def dump_line(record: BaseModel) -> str:
    return record.model_dump_json(exclude_none=False) + "\n"


def write_atomic(path: str | Path, text_chunks: Iterable[str]) -> Path:
    """Write ``text_chunks`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for chunk in text_chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_records(path: str | Path, records: Iterable[BaseModel]) -> Path:
    """Write records as JSONL, atomically."""
    return write_atomic(path, (dump_line(r) for r in records))

"""JSON Lines readers and writers for the shared records.

Readers raise :class:`InputError` naming the file, the 1-based line and the field (undecodable
bytes included); writers write to a temporary file in the same folder and rename it into place, so
a crash never leaves half a file. A written file gets the mode of the file it replaces (a new one:
the umask's), and a temporary file left by a killed writer is removed by the next write of the same
file.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import InputError, pydantic_error_field

M = TypeVar("M", bound=BaseModel)


def open_input(path: str | Path) -> BinaryIO:
    """``path`` opened for reading bytes; a folder, a missing or an unreadable file is an :class:`InputError`."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a folder, not a file", usage=True)
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise InputError(path, "no such file", usage=True) from None
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror}") from None


def decode_line(data: bytes, path: str | Path, number: int) -> str:
    """One line's bytes as UTF-8 text; undecodable bytes are an :class:`InputError` at that line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at column {exc.start + 1})",
                         line=number) from None


def parse_json_line(raw: bytes, path: Path, number: int) -> dict | None:
    """The JSON object on line ``number`` (None for a blank line); bad bytes or JSON raise :class:`InputError`."""
    line = decode_line(raw, path, number)
    if number == 1:
        line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc.msg} at column {exc.colno})", line=number) from None
    if not isinstance(obj, dict):
        raise InputError(path, f"expected a JSON object, got {type(obj).__name__}", line=number)
    return obj


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line; bad JSON raises :class:`InputError`."""
    path = Path(path)
    with open_input(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if (obj := parse_json_line(raw, path, number)) is not None:
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


def repair_tail(path: str | Path) -> None:
    """Cut a last line left half-written by a crash (everything before it stays)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb+") as handle:
        end = handle.seek(0, os.SEEK_END)
        position = end
        while position > 0:  # back from the end, a block at a time, to the last newline
            start = max(0, position - 65536)
            handle.seek(start)
            block = handle.read(position - start)
            if (cut := block.rfind(b"\n")) >= 0:
                if start + cut + 1 < end:
                    handle.truncate(start + cut + 1)
                return
            position = start
        handle.truncate(0)


def umask() -> int:
    """The process's umask (read without changing it where /proc says it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(path: Path) -> int:
    """The mode a rewritten ``path`` gets: the existing file's, else what ``open()`` would give (0666 - umask)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~umask()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: Path) -> None:
    """Remove the temporary files of ``path`` that a writer killed mid-write left (their process is gone)."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)-[a-z0-9_]+\.tmp")
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]
    except OSError:
        return
    for candidate in candidates:
        match = pattern.fullmatch(candidate.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            candidate.unlink(missing_ok=True)


def write_atomic(path: str | Path, text_chunks: Iterable[str]) -> Path:
    """Write ``text_chunks`` to ``path`` atomically (temp file in the same folder, fsync, rename).

    The file keeps the mode of the one it replaces (a new file: 0666 less the umask); the temp file
    is named after this process, so the next write removes it if this one is killed half way."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    mode = new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
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

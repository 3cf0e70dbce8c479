"""The error raised for bad input files: it always names the file, the line and the field."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class InputError(ValueError):
    """A problem with a user's input file, located precisely.

    >>> str(InputError("data.jsonl", "missing", line=3, field="steps"))
    'data.jsonl:3: field "steps": missing'
    """

    def __init__(self, path: str | Path, message: str, *, line: int | None = None, field: str | None = None,
                 usage: bool = False):
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = message
        self._usage = usage
        where = self.path if line is None else f"{self.path}:{line}"
        what = f'field "{field}": ' if field else ""
        super().__init__(f"{where}: {what}{message}")

    @property
    def is_usage(self) -> bool:
        """Whether this is a usage error, about the command line, rather than a data error, about what a file
        holds: the command line gives them exit 2 and 1. A usage error names an option or argument (``--format``;
        ``field "--out"`` or ``field "MODEL"``: a path that option or argument cannot take) or a path that does
        not exist or is the wrong kind (``usage=True``, as typer's own ``exists=True`` checks); an error at a
        file's line is data.

        >>> InputError("--format", "unknown").is_usage, InputError("o", "is a file", field="--out").is_usage
        (True, True)
        >>> InputError("a.jsonl", "no such file", usage=True).is_usage, InputError("a.jsonl", "bad", line=2).is_usage
        (True, False)
        """
        if self.line is not None:
            return False
        field = self.field or ""
        return self._usage or self.path.startswith("--") or field.startswith("--") or field.isupper()


class FieldError(ValueError):
    """A settings error found by a model-level check that belongs to one field (``field``): raised in a
    pydantic validator, it is reported at that field, as if the field's own validator had raised it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def pydantic_error_field(error: dict) -> str:
    """The dotted location of one pydantic error entry (``steps.2.text``), or the field a
    :class:`FieldError` names."""
    cause = (error.get("ctx") or {}).get("error")
    location = [str(part) for part in error.get("loc", ())]
    if isinstance(cause, FieldError):
        location.append(cause.field)
    return ".".join(location) or "<record>"


def yaml_line(text: str, field_path: str) -> int | None:
    """1-based line of the YAML node at a dotted field path (or of its deepest existing parent)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in field_path.split("."):
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((value for key, value in node.value if key.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
        else:
            node = None
    return node.start_mark.line + 1 if node is not None else line


def read_text(path: str | Path, what: str) -> str:
    """A UTF-8 text file's content; a missing, unreadable or undecodable file is an :class:`InputError`
    (naming the line of the first undecodable byte)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, f"is a folder, not a {what} file", usage=True)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, f"no such {what} file", usage=True) from None
    except OSError as error:
        raise InputError(path, f"cannot read {what}: {error.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise InputError(path, f"not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})",
                         line=line) from None


def parse_yaml_mapping(text: str, path: str | Path, expected: str) -> dict:
    """YAML (or JSON) text that must hold a mapping; ``expected`` says what the mapping holds."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise InputError(path, f"not valid YAML: {getattr(error, 'problem', error)}",
                         line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise InputError(path, f"must be a mapping ({expected})")
    return data


def validation_error(error: Any, path: str | Path, text: str) -> InputError:
    """The first error of a pydantic ``ValidationError`` on YAML ``text``, located at its line and field."""
    first = error.errors()[0]
    field = pydantic_error_field(first)
    message = first["msg"].removeprefix("Value error, ")
    return InputError(path, message, line=yaml_line(text, field) if field != "<record>" else None, field=field)


def required_field(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: str | Path, line: int,
                   where: str | None = None) -> Any:
    """``obj[key]``, which must be there and of type ``kind``; else an :class:`InputError` at ``path:line``
    naming the field (``where.key`` when ``where`` is given).

    >>> required_field({"steps": []}, "steps", list, "a.jsonl", 3)
    []
    >>> try:
    ...     required_field({"steps": "x"}, "steps", list, "a.jsonl", 3)
    ... except InputError as error:
    ...     print(error)
    a.jsonl:3: field "steps": expected list, got str
    """
    name = f"{where}.{key}" if where else key
    if key not in obj:
        raise InputError(path, "missing", line=line, field=name)
    if not isinstance(obj[key], kind):
        expected = getattr(kind, "__name__", None) or " or ".join(k.__name__ for k in kind)
        raise InputError(path, f"expected {expected}, got {type(obj[key]).__name__}", line=line, field=name)
    return obj[key]

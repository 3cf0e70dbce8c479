"""The error raised for bad input files: it always names the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import yaml


class InputError(ValueError):
    """A problem with a user's input file, located precisely.

    >>> str(InputError("data.jsonl", "missing", line=3, field="steps"))
    'data.jsonl:3: field "steps": missing'
    """

    def __init__(self, path: str | Path, message: str, *, line: int | None = None, field: str | None = None):
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = message
        where = self.path if line is None else f"{self.path}:{line}"
        what = f'field "{field}": ' if field else ""
        super().__init__(f"{where}: {what}{message}")


def pydantic_error_field(error: dict) -> str:
    """The dotted location of one pydantic error entry (``steps.2.text``)."""
    return ".".join(str(part) for part in error.get("loc", ())) or "<record>"


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

"""Where a command will write, checked before it does any work.

An output that is a folder where a file goes (or a file where a folder goes), that would sit under a
file, that cannot be written, or that is one of the command's own inputs is an :class:`InputError`
naming the path and the option, raised before anything is read at length, loaded or sent. Nothing
is created by the checks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .errors import InputError

PathLike = str | os.PathLike


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two existing paths are the same file or folder (through links too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _existing_ancestor(path: Path) -> Path:
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def check_creatable(path: PathLike, flag: str) -> None:
    """``path`` can be created or replaced: its nearest existing ancestor is a folder this process can write in."""
    path = Path(path)
    target = path.absolute().parent if path.exists() else _existing_ancestor(path)
    if not target.is_dir():
        raise InputError(path, f"cannot be created: {target} is a file, not a folder", field=flag, usage=True)
    if not os.access(target, os.W_OK | os.X_OK):
        raise InputError(path, f"cannot be written: no permission to write in {target}", field=flag, usage=True)


def _not_an_input(path: Path, inputs: Iterable[PathLike | None], flag: str, what: str) -> None:
    for given in inputs:
        if given is not None and path.exists() and same_file(path, given):
            raise InputError(path, f"is also an input of this command; write the {what} elsewhere", field=flag,
                             usage=True)


def check_output_file(path: PathLike, *, flag: str = "--out", inputs: Iterable[PathLike | None] = (),
                      what: str = "output") -> None:
    """A file this command will write (create, replace or append to)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, f"is a folder; {flag} takes a file", field=flag, usage=True)
    _not_an_input(path, inputs, flag, what)
    check_creatable(path, flag)


def check_output_folder(path: PathLike, *, flag: str = "--out", files: Iterable[str] = (),
                        inputs: Iterable[PathLike | None] = (), what: str = "output", whole: bool = False) -> None:
    """A folder this command will write ``files`` into (created if missing); ``whole``: the folder is replaced
    as a whole, so no input may lie inside it."""
    path = Path(path)
    inputs = list(inputs)
    if path.exists() and not path.is_dir():
        raise InputError(path, f"is a file; {flag} takes a folder", field=flag, usage=True)
    _not_an_input(path, inputs, flag, what)
    if whole and path.is_dir():
        inside = [Path(p) for p in inputs if p is not None and Path(p).exists()
                  and Path(p).resolve().is_relative_to(path.resolve())]
        if inside:
            raise InputError(path, f"holds the input {inside[0]}, and the {what} replaces the whole folder; write "
                                   "it elsewhere", field=flag, usage=True)
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(path, "cannot be written: no permission to write in it", field=flag, usage=True)
        for name in files:
            target = path / name
            if target.is_dir():
                raise InputError(target, f"is a folder where {flag} needs to write a file", field=flag, usage=True)
            _not_an_input(target, inputs, flag, what)
    else:
        check_creatable(path, flag)

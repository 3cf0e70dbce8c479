"""One writer per output: a second quantmedic process that would write the same file or study folder
stops at once with one line instead of eating the first one's output.

The lock is an ``flock`` on a small file named after the output's absolute path, kept apart from
the output (in ``$QUANTMEDIC_LOCK_DIR``, default ``<tmp>/quantmedic-locks-<uid>``), so no stray file
appears next to anyone's data; the kernel releases it when the holder exits, however it exits
(kill -9 included), so a stale lock never blocks a rerun.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class OutputLocked(RuntimeError):
    """Another process is writing this output (the message names it and that process)."""


def lock_dir() -> Path:
    folder = os.environ.get("QUANTMEDIC_LOCK_DIR") or os.path.join(tempfile.gettempdir(),
                                                                    f"quantmedic-locks-{os.getuid()}")
    return Path(folder)


def lock_path(output: str | os.PathLike) -> Path:
    """Where the lock of ``output`` lives (one per absolute path)."""
    key = hashlib.sha256(str(Path(output).resolve()).encode()).hexdigest()[:24]
    return lock_dir() / f"{key}.lock"


@contextmanager
def exclusive_output(output: str | os.PathLike, what: str = "output") -> Iterator[None]:
    """Hold the lock of ``output`` for the block; raise :class:`OutputLocked` if another process holds it."""
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise OutputLocked(f"{output}: this {what} is being written by {holder}; wait for it to finish, or "
                               "write elsewhere") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({' '.join(Path(sys.argv[0]).name.split()[:1] + sys.argv[1:3])})".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock

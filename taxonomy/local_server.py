"""Local child servers, standard library only: reserve a port, start a process that dies with its
parent, wait until it answers, stop its whole process group::

    with start_server([sys.executable, "-m", "http.server", str(port := reserve_port())], log) as server:
        server.wait_until_ready(f"http://127.0.0.1:{port}/", timeout=30)  # then stopped on exit
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

Ready = str | int | Callable[[], bool]  # a URL, a TCP port on 127.0.0.1, or a predicate


class ServerStartError(RuntimeError):
    """A local server exited or was not ready in time; the message ends with its log tail."""


def reserve_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (the OS picks it; nothing holds it afterwards)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


def log_tail(log: str | os.PathLike, lines: int = 60, chars: int = 3000) -> str:
    """The last ``lines`` lines of ``log``, at most ``chars`` characters."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - 4 * chars))
            text = handle.read().decode(errors="replace")
    except OSError as exc:
        return f"<cannot read {log}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])[-chars:]


def _die_with_parent(death_signal: int) -> Callable[[], None] | None:
    """preexec_fn (Linux): ``death_signal`` reaches the child when the thread that started it dies."""
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl  # resolved before fork, not in the child
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, int(death_signal))  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), death_signal)

    return preexec


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether an HTTP GET of ``url`` is answered with a status below 500."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status < 500
    except urllib.error.HTTPError as error:
        return error.code < 500
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until_ready(process: subprocess.Popen, ready: Ready, *, timeout: float, log: Path | None = None,
                     name: str = "the server", error: Callable[[str], Exception] = ServerStartError,
                     interval: float = 0.2) -> None:
    """Poll ``ready`` (a URL: any HTTP answer below 500; a port: a TCP connection; or a predicate).

    Raises ``error`` at once when ``process`` exits, or after ``timeout`` seconds, with the log tail."""
    check: Callable[[], bool]
    if callable(ready):
        check = ready
    else:
        check = partial(http_ok, ready) if isinstance(ready, str) else partial(port_in_use, ready)
    deadline = time.monotonic() + timeout
    while not check():
        if process.poll() is not None:
            raise error(f"{name} exited with code {process.returncode}{_where(log)}")
        if time.monotonic() > deadline:
            raise error(f"{name} was not ready after {timeout:.0f} s{_where(log)}")
        time.sleep(interval)


def _where(log: Path | None) -> str:
    return f" (log {log}):\n{log_tail(log)}" if log else ""


def stop_process_group(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM ``process``'s group, wait up to ``timeout`` s for it, then SIGKILL the group (children
    that outlived the leader too). ``timeout=0`` sends SIGKILL at once, as ``kill -9`` would."""
    if timeout > 0 and process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


@dataclass(frozen=True)
class LocalServer:
    """A child started by :func:`start_server`; as a context manager, stopped on exit."""

    process: subprocess.Popen
    log: Path
    name: str
    port: int | None = None

    def log_tail(self, lines: int = 60, chars: int = 3000) -> str:
        return log_tail(self.log, lines, chars)

    def wait_until_ready(self, ready: Ready, timeout: float, *,
                         error: Callable[[str], Exception] = ServerStartError, interval: float = 0.2) -> None:
        wait_until_ready(self.process, ready, timeout=timeout, log=self.log, name=self.name, error=error,
                         interval=interval)

    def stop(self, timeout: float = 10.0) -> None:
        stop_process_group(self.process, timeout)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start_server(command: Sequence[str], log: str | os.PathLike, *, name: str | None = None,
                 port: int | None = None, env: Mapping[str, str] | None = None,
                 death_signal: int = signal.SIGKILL) -> LocalServer:
    """Start ``command`` in a session (process group) of its own, stdin closed, stdout and stderr
    appended to ``log``. On Linux it receives ``death_signal`` when the thread that started it
    dies, however it dies (``kill -9`` included), so it cannot outlive its parent."""
    log = Path(log)
    with log.open("ab") as sink:
        process = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                   env=None if env is None else dict(env), start_new_session=True,
                                   preexec_fn=_die_with_parent(death_signal))
    return LocalServer(process, log, name or Path(command[0]).name, port)

"""A process pool with a per-item time limit: ``check`` runs over items in worker processes, and a
worker still busy when its item's time is up is killed and replaced.

Nothing stops the run: an item that times out, kills its worker or makes ``check`` raise gets what
the caller's ``on_failure(item, Failure)`` returns, and the other items go on. Only a worker that
cannot start at all is an error (:class:`PoolError`).
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

PREFETCH = 2  # items in flight per worker: the running one and the next

TIMEOUT = "timeout"
CRASH = "crash"
ERROR = "error"


class PoolError(RuntimeError):
    """The workers cannot start at all (not a problem with any one item)."""


@dataclass(frozen=True)
class Failure:
    """Why an item got no result from ``check``.

    ``kind`` is ``timeout``, ``crash`` (the worker died) or ``error`` (``check`` raised); ``reason``
    says it in words: ``timeout``, ``worker crashed (exit code 3)``, ``ValueError: <message>``.
    """

    kind: str
    reason: str


def _serve(conn: Connection, check: Callable, setup: Callable[[], None] | None) -> None:
    """A worker: run ``setup``, say ready, then check items until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    if setup is not None:
        setup()  # e.g. pay the checker's imports before the first item's clock starts
    try:
        conn.send("ready")
        while (message := conn.recv()) is not None:
            index, item = message
            try:
                outcome = (True, check(item))
            except Exception as exc:  # noqa: BLE001 - any failure of one item is that item's
                outcome = (False, f"{type(exc).__name__}: {exc}")
            conn.send((index, outcome))
    except (EOFError, OSError):  # the parent is gone or stopped listening (Ctrl-C, kill): nothing to say
        return


class _Worker:
    """One worker process and the items sent to it, in order; the first is running, the rest wait
    in its pipe (so it never idles between items). Only the running item's clock is ticking."""

    def __init__(self, context, check: Callable, setup: Callable[[], None] | None):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, check, setup), daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.sent: deque[int] = deque()
        self.deadline = 0.0

    def send(self, index: int, item: Any, timeout: float) -> None:
        if not self.sent:
            self.deadline = time.monotonic() + timeout
        self.sent.append(index)
        self.conn.send((index, item))

    def receive(self) -> Any:
        """The next message, or None when there is none (or the pipe is broken)."""
        try:
            return self.conn.recv() if self.conn.poll() else None
        except (EOFError, OSError):
            return None

    def stop(self, *, kill: bool = False) -> None:
        if not kill and self.process.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(2)
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


def _context(preload: Sequence[str]):
    """Workers forked from a clean single-threaded server that has already imported ``preload`` (a
    worker then starts in milliseconds instead of re-importing heavy modules); spawned where there
    is no fork server. Never a plain fork of this process, which may run threads."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    if preload:
        context.set_forkserver_preload(list(preload))  # no effect once the server runs
    _start_fork_server()
    return context


def _start_fork_server() -> None:
    """Start the fork server with Ctrl-C ignored (it and the workers forked from it inherit that), so that
    Ctrl-C reaches only this process, which stops the workers: no worker or server dies half-started and
    prints a traceback of its own (``BrokenPipeError``, ``KeyboardInterrupt``)."""
    from multiprocessing import forkserver

    if threading.current_thread() is not threading.main_thread():
        forkserver.ensure_running()
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


class _Pool(Generic[T, R]):
    """The state of one :func:`run_pool` call: the workers, the items not sent yet, the results."""

    def __init__(self, items: Sequence[T], check: Callable[[T], R], workers: int, timeout: float,
                 on_failure: Callable[[T, Failure], R], setup: Callable[[], None] | None, preload: Sequence[str],
                 progress: Callable[[int, int], None] | None, on_result: Callable[[int, R], None] | None = None):
        self.items, self.check, self.timeout, self.on_failure = items, check, timeout, on_failure
        self.setup, self.progress, self.on_result = setup, progress, on_result
        self.results: list[Any] = [None] * len(items)
        self.done = 0
        self.pending = deque(range(len(items)))
        self.context = _context(preload)
        self.workers = [self._start() for _ in range(min(workers, len(items)))]

    def _start(self) -> _Worker:
        return _Worker(self.context, self.check, self.setup)

    def _finish(self, index: int, result: R) -> None:
        self.results[index] = result
        self.done += 1
        if self.on_result is not None:
            self.on_result(index, result)
        if self.progress is not None:
            self.progress(self.done, len(self.items))

    def _replace(self, worker: _Worker, failure: Failure | None) -> None:
        """Fail the running item (if any) with ``failure``, requeue the waiting ones, start a fresh worker."""
        worker.stop(kill=True)
        if failure is not None:
            index = worker.sent.popleft()
            self._finish(index, self.on_failure(self.items[index], failure))
            self.pending.extendleft(reversed(worker.sent))
        self.workers[self.workers.index(worker)] = self._start()

    def _feed(self) -> None:
        for worker in self.workers:
            while worker.ready and len(worker.sent) < PREFETCH and self.pending:
                index = self.pending.popleft()
                try:
                    worker.send(index, self.items[index], self.timeout)
                except OSError:  # it died since it was last seen (BrokenPipeError): _handle replaces it
                    worker.sent.pop()
                    self.pending.appendleft(index)
                    break

    def _handle(self, worker: _Worker, ready: list) -> None:
        """Take what ``worker`` sent, notice that it died, or kill it when its item's time is up."""
        if worker.conn in ready or worker.process.sentinel in ready:
            message = worker.receive()
            if message == "ready":
                worker.ready = True
            elif message is not None:
                index, (ok, value) = worker.sent.popleft(), message[1]
                self._finish(index, value if ok else self.on_failure(self.items[index], Failure(ERROR, value)))
                worker.deadline = time.monotonic() + self.timeout  # the next one starts now
            elif not worker.process.is_alive() or worker.process.sentinel in ready:
                worker.process.join()
                code = worker.process.exitcode
                if not worker.ready:
                    raise PoolError(f"a worker exited while starting (exit code {code})")
                self._replace(worker, Failure(CRASH, f"worker crashed (exit code {code})") if worker.sent else None)
        elif worker.sent and time.monotonic() >= worker.deadline:
            self._replace(worker, Failure(TIMEOUT, TIMEOUT))

    def run(self) -> list[R]:
        try:
            while self.done < len(self.items):
                self._feed()
                waits = [w.deadline - time.monotonic() for w in self.workers if w.sent]
                ready = wait([w.conn for w in self.workers] + [w.process.sentinel for w in self.workers],
                             timeout=max(0.0, min(waits)) if waits else None)
                for worker in list(self.workers):
                    self._handle(worker, ready)
        finally:
            for worker in self.workers:
                worker.stop(kill=bool(worker.sent))
        return self.results


def run_pool(check: Callable[[T], R], items: Sequence[T], *, on_failure: Callable[[T, Failure], R],
             workers: int = 2, timeout: float = 5.0, setup: Callable[[], None] | None = None,
             preload: Sequence[str] = (), progress: Callable[[int, int], None] | None = None,
             on_result: Callable[[int, R], None] | None = None) -> list[R]:
    """``check(item)`` for each item in ``workers`` processes, each within ``timeout`` seconds; results in order.

    An item's clock starts when its worker starts it. An item that times out, crashes its worker or
    makes ``check`` raise gets ``on_failure(item, failure)`` (called in this process). ``check`` and
    ``setup`` must be module-level functions (they are sent to the workers); ``setup`` runs in each
    worker before its first item, ``preload`` names modules the fork server imports once for all
    workers. ``progress`` is called as ``progress(done, total)`` after each item, and ``on_result(index,
    result)`` as each result comes (in the order they finish: to save results as they come). Raises
    :class:`PoolError` when a worker exits before it is ready.

    >>> run_pool(abs, [-2, 3], on_failure=lambda item, failure: None, workers=1)
    [2, 3]
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    if not items:
        return []
    return _Pool(items, check, workers, timeout, on_failure, setup, preload, progress, on_result).run()

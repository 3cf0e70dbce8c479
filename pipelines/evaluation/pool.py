"""A process pool with a per-item time limit: ``check`` runs over items in worker processes, and a
worker still busy when its item's time is up is killed and replaced.

Nothing stops the run: an item that times out, kills its worker or makes ``check`` raise gets what
the caller's ``on_failure(item, Failure)`` returns, and the other items go on. Only a worker that
cannot start at all is an error (:class:`PoolError`).
"""

from __future__ import annotations

import itertools
import multiprocessing
import signal
import threading
import time
from collections import deque
from contextlib import closing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

PREFETCH = 2  # items in flight per worker: the running one and the next
_NOTHING = object()

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
    """The state of one pool run: the workers, the items taken from the input and not finished yet (only
    those are held: the input is read as workers have room), and the results not handed out yet."""

    def __init__(self, items: Iterable[T], check: Callable[[T], R], workers: int, timeout: float,
                 on_failure: Callable[[T, Failure], R], setup: Callable[[], None] | None, preload: Sequence[str]):
        self.check, self.timeout, self.on_failure, self.setup = check, timeout, on_failure, setup
        self.source = enumerate(items)
        self.exhausted = False
        self.items: dict[int, T] = {}  # taken and not finished
        self.pending: deque[int] = deque()  # taken and not sent (requeued after a worker died)
        self.finished: deque[tuple[int, R]] = deque()
        self.context = _context(preload)
        self.count = workers
        self.workers: list[_Worker] = []

    def _start(self) -> _Worker:
        return _Worker(self.context, self.check, self.setup)

    def _finish(self, index: int, result: R) -> None:
        del self.items[index]
        self.finished.append((index, result))

    def _replace(self, worker: _Worker, failure: Failure | None) -> None:
        """Fail the running item (if any) with ``failure``, requeue the waiting ones, start a fresh worker."""
        worker.stop(kill=True)
        if failure is not None:
            index = worker.sent.popleft()
            self._finish(index, self.on_failure(self.items[index], failure))
            self.pending.extendleft(reversed(worker.sent))
        self.workers[self.workers.index(worker)] = self._start()

    def _take(self) -> int | None:
        """The next item to send: a requeued one, else the next of the input (None when there is none)."""
        if self.pending:
            return self.pending.popleft()
        if not self.exhausted:
            taken = next(self.source, None)
            if taken is not None:
                self.items[taken[0]] = taken[1]
                return taken[0]
            self.exhausted = True
        return None

    def _feed(self) -> None:
        for worker in self.workers:
            while worker.ready and len(worker.sent) < PREFETCH and (index := self._take()) is not None:
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

    def run(self) -> Iterator[tuple[int, R]]:
        try:
            self.workers = [self._start() for _ in range(self.count)]
            while self.items or not self.exhausted:
                self._feed()
                if self.exhausted and not self.items:
                    break
                waits = [w.deadline - time.monotonic() for w in self.workers if w.sent]
                ready = wait([w.conn for w in self.workers] + [w.process.sentinel for w in self.workers],
                             timeout=max(0.0, min(waits)) if waits else None)
                for worker in list(self.workers):
                    self._handle(worker, ready)
                while self.finished:
                    yield self.finished.popleft()
        finally:
            for worker in self.workers:
                worker.stop(kill=bool(worker.sent))


def iter_pool(check: Callable[[T], R], items: Iterable[T], *, on_failure: Callable[[T, Failure], R],
              workers: int = 2, timeout: float = 5.0, setup: Callable[[], None] | None = None,
              preload: Sequence[str] = ()) -> Iterator[tuple[int, R]]:
    """``(index, check(item))`` for each item of ``items`` (any iterable, read only as workers have room), in
    the order they finish: :func:`run_pool` without holding the items or the results. Closing the iterator
    early stops the workers."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    source = iter(items)
    first = next(source, _NOTHING)
    if first is _NOTHING:
        return (result for result in ())  # no worker started
    return _Pool(itertools.chain([first], source), check, workers, timeout, on_failure, setup, preload).run()


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
    results: list[Any] = [None] * len(items)
    with closing(iter_pool(check, items, on_failure=on_failure, workers=min(workers, len(items) or workers),
                           timeout=timeout, setup=setup, preload=preload)) as pool:
        for done, (index, result) in enumerate(pool, start=1):
            results[index] = result
            if on_result is not None:
                on_result(index, result)
            if progress is not None:
                progress(done, len(items))
    return results

"""A batch run's folder (``--batch-dir``): the requests waiting for a batch, the ones a batch holds,
and the results that came back, in one SQLite file (``batch.sqlite``), so a killed run or a rerun
picks up exactly where it was and never sends a request twice.

A request's life: :meth:`BatchStore.want` *queues* it (unless a batch already holds it);
:meth:`BatchStore.take_queued` writes the queue as a request file for one batch and marks those
requests *in flight*; :meth:`BatchStore.ingest` reads that batch's result files and stores each
result (a request with no line at all comes back as never run, which is worth another batch).
:meth:`BatchStore.requeue` drops a failed result so the request can go in the next batch.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import write_atomic

from .batch_files import BatchResult, read_results, request_line
from .cache import clean

STORE_NAME = "batch.sqlite"
_TABLES = (
    "CREATE TABLE IF NOT EXISTS queued (custom_id TEXT PRIMARY KEY, line TEXT)",
    "CREATE TABLE IF NOT EXISTS inflight (custom_id TEXT PRIMARY KEY, batch TEXT, line TEXT)",
    "CREATE TABLE IF NOT EXISTS results (custom_id TEXT PRIMARY KEY, status INTEGER, body TEXT, error_code TEXT, "
    "error TEXT)",
    "CREATE TABLE IF NOT EXISTS tries (custom_id TEXT PRIMARY KEY, n INTEGER)",
)


class BatchStore:
    """The state of the batches of one run folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(self.folder, "is a file; --batch-dir must be a folder", usage=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.folder / STORE_NAME, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            for table in _TABLES:
                self._db.execute(table)
        except sqlite3.Error as error:
            raise InputError(self.folder / STORE_NAME, f"cannot open the batch state ({error})") from None

    def result(self, custom_id: str) -> BatchResult | None:
        row = self._db.execute("SELECT status, body, error_code, error FROM results WHERE custom_id = ?",
                               (custom_id,)).fetchone()
        if row is None:
            return None
        status, body, code, error = row
        return BatchResult(custom_id, status, json.loads(body) if body else None, code, error)

    def want(self, custom_id: str, body: dict) -> None:
        """Queue a request for the next batch, unless it is queued or a batch holds it already."""
        if self._db.execute("SELECT 1 FROM inflight WHERE custom_id = ?", (custom_id,)).fetchone() is None:
            self._db.execute("INSERT OR IGNORE INTO queued VALUES (?, ?)", (custom_id, request_line(custom_id, body)))

    def requeue(self, custom_id: str, body: dict) -> int:
        """Drop a failed result and queue the request again; returns how many times it has been requeued."""
        with self._db:
            self._db.execute("DELETE FROM results WHERE custom_id = ?", (custom_id,))
            self._db.execute("INSERT INTO tries VALUES (?, 1) ON CONFLICT(custom_id) DO UPDATE SET n = n + 1",
                             (custom_id,))
        self.want(custom_id, body)
        return self.tries(custom_id)

    def tries(self, custom_id: str) -> int:
        row = self._db.execute("SELECT n FROM tries WHERE custom_id = ?", (custom_id,)).fetchone()
        return row[0] if row else 0

    @property
    def queued(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM queued").fetchone()[0]

    def in_flight(self, batch: str | None = None) -> int:
        if batch is None:
            return self._db.execute("SELECT COUNT(*) FROM inflight").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM inflight WHERE batch = ?", (batch,)).fetchone()[0]

    def take_queued(self, batch: str) -> Path | None:
        """Write every queued request to ``<batch>.requests.jsonl`` (atomically) and mark them in flight
        in ``batch``; None when nothing is queued."""
        if not self.queued:
            return None
        path = self.folder / f"{batch}.requests.jsonl"
        lines = (line for (line,) in self._db.execute("SELECT line FROM queued ORDER BY rowid"))
        write_atomic(path, lines)
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO inflight SELECT custom_id, ?, line FROM queued", (batch,))
            self._db.execute("DELETE FROM queued")
        return path

    def ingest(self, batch: str, result_files: Iterable[Path]) -> tuple[int, int]:
        """Store the results of ``batch`` from its result files; each request of the batch with no line
        is stored as never run. Returns ``(ok, failed)``."""
        ok = failed = 0
        with self._db:
            for path in result_files:
                for result in read_results(path):
                    if self._db.execute("DELETE FROM inflight WHERE custom_id = ? AND batch = ?",
                                        (result.custom_id, batch)).rowcount == 0:
                        continue  # not a request of this batch (or a duplicate line)
                    self._store(result)
                    ok, failed = ok + result.ok, failed + (not result.ok)
            missing = [cid for (cid,) in self._db.execute("SELECT custom_id FROM inflight WHERE batch = ?", (batch,))]
            for cid in missing:
                self._store(BatchResult(cid, None, error_code="no_result", error="the batch returned no line for it"))
            self._db.execute("DELETE FROM inflight WHERE batch = ?", (batch,))
        return ok, failed + len(missing)

    def _store(self, result: BatchResult) -> None:
        """Keep one result, scrubbed of anything shaped like a key (a server may echo one)."""
        body = clean(json.dumps(result.body)) if result.body is not None else None
        self._db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)",
                         (result.custom_id, result.status, body, result.error_code, clean(result.error)))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> BatchStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BatchExecutor(Protocol):
    """Runs the queued requests of a store as batches (``vllm run-batch``, the OpenAI Batch API)."""

    name: str
    discount: float
    """The share of the online price a batch costs (0.5 for the OpenAI Batch API, 1.0 for your own vLLM)."""

    def advance(self, store: BatchStore, say: Callable[[str], None]) -> bool:
        """Collect any batch that has finished, send what is queued, and say what happened; True when
        nothing is left in flight (every request sent has its result in ``store``), False when a batch
        is still running and a later rerun should collect it."""
        ...

"""``--executor openai-batch``: the OpenAI Batch API (half the price, a 24-hour window) as a batch executor.

Each :meth:`OpenAIBatchAPI.advance` first collects the batches an earlier call submitted (those still
running are only reported), then submits what is queued as one new batch: its request file is
uploaded (``POST /v1/files``, purpose ``batch``) and a batch created from it (``POST /v1/batches``). A
batch that ended (completed, expired, failed or cancelled) has its output and error files downloaded
to ``<batch>.output.jsonl`` / ``<batch>.errors.jsonl`` (scrubbed of the key, whatever the server
echoes) and ingested; a request with no line (expired, cancelled) is stored as never run, which
:class:`~.batch_backend.BatchBackend` queues again for the next batch.

The submitted batches are listed in ``openai-batch.json`` in the store's folder (never the key),
written atomically before and after every step that can fail, so a killed run never sends a batch
twice: an entry is written before the requests are taken from the queue, its ``input_file_id``
right after the upload, a ``create_started_at`` before the batch is created and its ``batch_id``
right after. A rerun finishes a half-made entry: it uploads a request file not yet uploaded, and
for an entry whose creation was started but not recorded it looks for a batch of that input file
(``GET /v1/batches``) before creating one. The worst a crash costs is a second upload of a file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openai

from quantmedic.taxonomy.errors import InputError, read_text
from quantmedic.taxonomy.jsonl import write_atomic

from .batch_files import CHAT_URL, check_request_lines
from .batch_store import BatchStore
from .cache import clean

STATE_NAME = "openai-batch.json"
BATCH_PREFIX = "openai-"
ENDED = ("completed", "expired", "failed", "cancelled")
"""Batch statuses after which nothing more happens; any other (validating, in_progress, finalizing,
cancelling) means "still running"."""
LOOK_BACK_S = 600
"""How far before a creation was started :meth:`OpenAIBatchAPI.advance` looks for the batch it made."""


class BatchAPIError(RuntimeError):
    """The Batch API refused a call or could not be reached; the message never holds the key."""


class BatchState:
    """The batches of one run folder in ``openai-batch.json``, saved atomically on every change."""

    def __init__(self, folder: Path, base_url: str):
        self.path = folder / STATE_NAME
        self.base_url = clean(base_url)
        self.entries: list[dict] = []
        if self.path.exists():
            try:
                data = json.loads(read_text(self.path, "batch state"))
                self.entries = list(data["batches"])
            except (ValueError, KeyError, TypeError):
                raise InputError(self.path, "not an openai-batch state file (a JSON object with `batches`)") from None

    def save(self) -> None:
        data = {"executor": "openai-batch", "base_url": self.base_url, "batches": self.entries}
        write_atomic(self.path, [json.dumps(data, indent=1) + "\n"])

    def add(self, name: str) -> dict:
        entry = {"name": name, "input_file_id": None, "batch_id": None}
        self.entries.append(entry)
        self.save()
        return entry

    def update(self, entry: dict, **fields) -> None:
        entry.update(fields)
        self.save()

    def drop(self, entry: dict) -> None:
        self.entries.remove(entry)
        self.save()


@dataclass(frozen=True)
class OpenAIBatchAPI:
    """Runs a store's queued requests as OpenAI Batch API batches at ``base_url``."""

    base_url: str
    api_key: str | None = field(default=None, repr=False)
    completion_window: str = "24h"
    wait: bool = False
    """Poll until every batch has ended, instead of returning while one is still running."""
    poll_seconds: float = 30.0
    max_retries: int = 2
    """The SDK's own retries of one API call (429, 5xx, dropped connections)."""
    timeout: float = 300.0
    name: str = "openai-batch"
    discount: float = 0.5

    def advance(self, store: BatchStore, say: Callable[[str], None]) -> bool:
        """Collect the batches that ended, submit what is queued, and (with :attr:`wait`) poll until
        every batch has ended; True when no batch is left running. Raises :class:`BatchAPIError`."""
        state = BatchState(store.folder, self.base_url)
        with openai.OpenAI(base_url=self.base_url, api_key=self.api_key or "not-needed",
                           max_retries=self.max_retries, timeout=self.timeout) as client:
            self._collect(client, store, state, say)
            if store.queued:
                entry = state.add(next_batch_name(store.folder, state))
                store.take_queued(entry["name"])
                self._send(client, store, state, entry, say)
            while self.wait and state.entries:
                time.sleep(self.poll_seconds)
                self._collect(client, store, state, say)
        return not state.entries

    def _collect(self, client: openai.OpenAI, store: BatchStore, state: BatchState,
                 say: Callable[[str], None]) -> None:
        """Finish each half-made entry, ingest each batch that ended, report the others."""
        for entry in list(state.entries):
            if entry.get("batch_id") is None:
                self._send(client, store, state, entry, say)
                continue
            batch = self._call("retrieve batch", client.batches.retrieve, entry["batch_id"])
            if batch.status in ENDED:
                self._finish(client, store, state, entry, batch, say)
            else:
                say(f"batch {batch.id} ({entry['name']}): {batch.status}, {counts(batch)}")

    def _send(self, client: openai.OpenAI, store: BatchStore, state: BatchState, entry: dict,
              say: Callable[[str], None]) -> None:
        """Upload ``entry``'s request file (unless it was) and create its batch (unless a batch of that
        file exists), recording each id as soon as the server gives it."""
        name = entry["name"]
        requests = store.folder / f"{name}.requests.jsonl"
        if not entry.get("input_file_id"):
            if not store.in_flight(name):  # killed before the requests left the queue: they are queued still
                state.drop(entry)
                requests.unlink(missing_ok=True)
                return
            lines = [line for line in read_text(requests, "batch request").splitlines() if line.strip()]
            count = check_request_lines(lines, requests)
            with requests.open("rb") as handle:
                uploaded = self._call("upload the request file", client.files.create, file=handle, purpose="batch")
            state.update(entry, input_file_id=uploaded.id, requests=count)
        batch = self._call("list batches", made_before, client, entry) if entry.get("create_started_at") else None
        if batch is None:
            state.update(entry, create_started_at=int(time.time()))
            batch = self._call("create the batch", client.batches.create, input_file_id=entry["input_file_id"],
                               endpoint=CHAT_URL, completion_window=self.completion_window,
                               metadata={"quantmedic_batch": name})
        state.update(entry, batch_id=batch.id, submitted_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        say(f"submitted batch {batch.id}: {entry.get('requests', '?')} requests ({name})")

    def _finish(self, client: openai.OpenAI, store: BatchStore, state: BatchState, entry: dict, batch,
                say: Callable[[str], None]) -> None:
        """Download an ended batch's files, ingest them and forget the batch."""
        name, files = entry["name"], []
        for kind, file_id in (("output", batch.output_file_id), ("errors", batch.error_file_id)):
            if file_id:
                content = self._call(f"download the {kind} file", client.files.content, file_id)
                text = content.read().decode("utf-8", "replace")
                files.append(write_atomic(store.folder / f"{name}.{kind}.jsonl", cleaned_lines(text, self.api_key)))
        if batch.status == "failed" and not files:
            why = clean(batch_errors(batch), self.api_key)
            say(f"batch {batch.id} ({name}) failed: {why}; its {store.in_flight(name)} requests go in the next batch")
            requests = store.folder / f"{name}.requests.jsonl"
            files.append(write_atomic(store.folder / f"{name}.errors.jsonl", failed_lines(requests, why)))
        ok, failed = store.ingest(name, files)
        state.drop(entry)
        say(f"batch {batch.id} ({name}) {batch.status}: {counts(batch)}; {ok} answered, {failed} failed")

    def _call(self, what: str, method, *args, **kwargs):
        """``method(*args, **kwargs)``; an API error becomes a :class:`BatchAPIError` cleaned of the key."""
        try:
            return method(*args, **kwargs)
        except openai.APIStatusError as error:
            message = f"HTTP {error.status_code}: {error.message}"
        except openai.APIError as error:
            message = f"{type(error).__name__}: {error}"
        raise BatchAPIError(clean(f"cannot {what} at {self.base_url} ({message[:500]})", self.api_key))


def made_before(client: openai.OpenAI, entry: dict):
    """The batch an interrupted run created from ``entry``'s input file, or None."""
    since = entry["create_started_at"] - LOOK_BACK_S
    for number, batch in enumerate(client.batches.list(limit=100)):  # newest first, page after page
        if batch.input_file_id == entry["input_file_id"]:
            return batch
        if batch.created_at < since or number >= 1000:
            return None
    return None


def counts(batch) -> str:
    """``3/4 done, 1 failed`` from a batch's ``request_counts``."""
    c = batch.request_counts
    return "no counts yet" if c is None else f"{c.completed}/{c.total} done, {c.failed} failed"


def batch_errors(batch) -> str:
    """What a failed batch's ``errors`` say, in one line."""
    data = batch.errors.data if batch.errors and batch.errors.data else []
    said = [f"{e.code or 'error'}: {e.message or ''}" + (f" (line {e.line})" if e.line else "") for e in data[:3]]
    return "; ".join(said) + (f"; and {len(data) - 3} more" if len(data) > 3 else "") if said else "no reason given"


def failed_lines(requests: Path, why: str) -> Iterator[str]:
    """An error line (never run, so worth another batch) for each request of a batch that failed as a whole."""
    for text in read_text(requests, "batch request").splitlines():
        if text.strip():
            line = {"id": None, "custom_id": json.loads(text)["custom_id"], "response": None,
                    "error": {"code": "batch_failed", "message": why}}
            yield json.dumps(line, ensure_ascii=False) + "\n"


def cleaned_lines(text: str, key: str | None) -> Iterator[str]:
    """The lines of a downloaded result file, every string in them :func:`~.cache.clean`\\ ed (of ``key``
    too); a line that is not JSON is kept, cleaned, for :func:`~.batch_files.read_results` to report."""
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            yield json.dumps(_cleaned(json.loads(line), key), ensure_ascii=False) + "\n"
        except ValueError:
            yield clean(line, key) + "\n"


def _cleaned(value, key: str | None):
    if isinstance(value, str):
        return clean(value, key)
    if isinstance(value, dict):
        return {k: _cleaned(v, key) for k, v in value.items()}
    if isinstance(value, list):
        return [_cleaned(v, key) for v in value]
    return value


def next_batch_name(folder: Path, state: BatchState) -> str:
    """``openai-0001``, ``openai-0002``, ...: one more than any batch of this executor in ``folder``."""
    names = [p.name.removesuffix(".requests.jsonl") for p in folder.glob(f"{BATCH_PREFIX}*.requests.jsonl")]
    numbers = [int(n[len(BATCH_PREFIX):]) for n in names + [e["name"] for e in state.entries]
               if n[len(BATCH_PREFIX):].isdigit()]
    return f"{BATCH_PREFIX}{max(numbers, default=0) + 1:04d}"

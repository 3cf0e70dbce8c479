"""The judge backend of the batch executors: the same requests as :class:`~.backend.ChatBackend`,
answered from a :class:`~.batch_store.BatchStore` instead of a live server.

A request whose result is stored comes back as a completion (and goes into the answer cache like any
other); one with no result yet is queued for the next batch and raises :class:`~.backend.Deferred`,
so its item waits for a later pass. A failed line that is worth retrying (expired, never run, 429,
5xx) is queued again, up to ``max_requeues`` times; any other failure is the server's refusal.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from .backend import Deferred, Endpoint, RequestRejected, TransportFailure, _completion_from, response_format_for
from .batch_files import custom_id_for
from .batch_store import BatchStore
from .cache import Completion, clean


class BatchBackend:
    """Answers one endpoint's requests from the batches of ``store``."""

    def __init__(self, endpoint: Endpoint, store: BatchStore, *, max_requeues: int = 3):
        self.endpoint = endpoint
        self.store = store
        self.max_requeues = max_requeues
        self.mode = "json_object" if endpoint.response_format == "json_object" else "json_schema"
        self.reached = True

    def body(self, messages: list[dict], schema: dict, params: dict) -> dict:
        """The chat request, as the online backend would send it."""
        return {"model": self.endpoint.model, "messages": messages,
                "response_format": response_format_for(self.mode, schema), **params}

    async def complete(self, messages: list[dict], schema: dict, params: dict,
                       on_retry: Callable[[str], None] | None = None) -> Completion:
        """The stored answer; raises :class:`Deferred` (queued for a batch), :class:`RequestRejected`
        or :class:`TransportFailure` (still failing after ``max_requeues`` batches)."""
        body = self.body(messages, schema, params)
        custom_id = custom_id_for(body)
        result = self.store.result(custom_id)
        if result is None:
            self.store.want(custom_id, body)
            raise Deferred()
        if result.ok:
            return _completion_from(json.dumps(result.body).encode(), self.endpoint.api_key)  # cleaned there
        reason = clean(f"{result.error_code or f'HTTP {result.status}'}: {result.error or 'no message'}",
                       self.endpoint.api_key)
        if not result.retryable:
            raise RequestRejected(result.status or 400, reason)
        if self.store.tries(custom_id) >= self.max_requeues:
            raise TransportFailure(f"{reason} after {self.max_requeues + 1} batches")
        self.store.requeue(custom_id, body)
        if on_retry:
            on_retry(reason)
        raise Deferred()

    async def close(self) -> None:
        """Nothing to close: the store belongs to the run."""

"""The OpenAI batch file format, which ``vllm run-batch`` and the OpenAI Batch API both read and write.

A *request file* holds one JSON object per line::

    {"custom_id": "...", "method": "POST", "url": "/v1/chat/completions", "body": {<chat request>}}

and a *result file* one per answered (or failed) request, in any order::

    {"id": "...", "custom_id": "...", "response": {"status_code": 200, "request_id": "...",
     "body": {<chat completion>}}, "error": null}

(a failed line has ``"response": null`` or a status of 400 and above, and/or an ``error`` object
with ``code`` and ``message``; the Batch API writes such lines to a separate error file, with the
same shape). Every line read is checked against :data:`RESULT_LINE_SCHEMA`; the ``custom_id`` is a
digest of the request body, so the same request always has the same id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jsonschema

from quantmedic.taxonomy.errors import InputError

CHAT_URL = "/v1/chat/completions"

REQUEST_LINE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "OpenAI batch request line",
    "type": "object",
    "required": ["custom_id", "method", "url", "body"],
    "additionalProperties": False,
    "properties": {
        "custom_id": {"type": "string", "minLength": 1, "maxLength": 512},
        "method": {"const": "POST"},
        "url": {"enum": [CHAT_URL]},
        "body": {"type": "object", "required": ["model", "messages"],
                 "properties": {"model": {"type": "string"}, "messages": {"type": "array", "minItems": 1}}},
    },
}
"""One line of a request file, as https://platform.openai.com/docs/guides/batch documents it."""

RESULT_LINE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "OpenAI batch result line",
    "type": "object",
    "required": ["custom_id"],
    "properties": {
        "id": {"type": ["string", "null"]},
        "custom_id": {"type": "string", "minLength": 1},
        "response": {"anyOf": [{"type": "null"}, {
            "type": "object", "required": ["status_code"],
            "properties": {"status_code": {"type": "integer"}, "request_id": {"type": ["string", "null"]},
                           "body": {"type": ["object", "string", "null"]}}}]},
        "error": {"anyOf": [{"type": "null"}, {
            "type": "object", "properties": {"code": {"type": ["string", "null"]},
                                             "message": {"type": ["string", "null"]}}}]},
    },
}
"""One line of a result (output or error) file."""

_REQUEST_VALIDATOR = jsonschema.Draft202012Validator(REQUEST_LINE_SCHEMA)
_RESULT_VALIDATOR = jsonschema.Draft202012Validator(RESULT_LINE_SCHEMA)


def custom_id_for(body: dict) -> str:
    """The request's id: a digest of its canonical JSON (the same request, the same id)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "qm-" + hashlib.sha256(canonical.encode()).hexdigest()[:40]


def request_line(custom_id: str, body: dict) -> str:
    """One line of a request file (with its newline)."""
    line = {"custom_id": custom_id, "method": "POST", "url": CHAT_URL, "body": body}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"


@dataclass(frozen=True)
class BatchResult:
    """What a batch says about one request: the completion body, or why there is none."""

    custom_id: str
    status: int | None
    """The HTTP status of the request's answer; None when the batch never ran it (expired, cancelled)."""
    body: dict | None = None
    error_code: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and isinstance(self.body, dict) and not self.error_code

    @property
    def retryable(self) -> bool:
        """Expired, cancelled, rate-limited, server-side or never-run lines are worth another batch."""
        return not self.ok and (self.status is None or self.status in (408, 409, 429) or self.status >= 500)


def parse_result(line: dict) -> BatchResult:
    """A :class:`BatchResult` from one result line already checked against :data:`RESULT_LINE_SCHEMA`."""
    response = line.get("response") or {}
    error = line.get("error") or {}
    body = response.get("body")
    status = response.get("status_code")
    message = error.get("message")
    if status is not None and status >= 400 and isinstance(body, dict):  # the error is in the body
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        message = message or str(inner.get("message") or inner)[:300]
    return BatchResult(line["custom_id"], status, body if isinstance(body, dict) else None,
                       error.get("code"), message)


def read_results(path: Path) -> Iterator[BatchResult]:
    """The results in a result file, one by one; a line off the format is an :class:`InputError`
    naming the file, the line and the field."""
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except ValueError as error:
                raise InputError(path, f"not JSON ({error.msg})", line=number) from None
            problem = next(iter(_RESULT_VALIDATOR.iter_errors(line)), None)
            if problem is not None:
                field = ".".join(map(str, problem.absolute_path)) or "line"
                raise InputError(path, f"not a batch result line: {problem.message}", line=number, field=field)
            yield parse_result(line)


def check_request_lines(lines: Iterable[str], path: Path) -> int:
    """How many request lines there are; the first one off :data:`REQUEST_LINE_SCHEMA` is an :class:`InputError`."""
    count = 0
    for number, text in enumerate(lines, 1):
        problem = next(iter(_REQUEST_VALIDATOR.iter_errors(json.loads(text))), None)
        if problem is not None:
            field = ".".join(map(str, problem.absolute_path)) or "line"
            raise InputError(path, f"not a batch request line: {problem.message}", line=number, field=field)
        count += 1
    return count

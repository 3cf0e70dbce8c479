"""A PROTOCOL-LEVEL STAND-IN for the OpenAI Batch API, for tests only: no local server (vLLM, llama.cpp,
...) implements the Batch API, so the executor's HTTP conversation is tested against this, not a model.

:class:`OpenAIBatchStandin` serves, on 127.0.0.1 in a background thread (aiohttp), what the
``openai`` SDK calls, in the documented shapes (https://platform.openai.com/docs/api-reference/batch):

* ``POST /v1/files`` (multipart, ``purpose=batch``): every line is checked against
  :data:`~quantmedic.judge.batch_files.REQUEST_LINE_SCHEMA` (and custom ids must be unique), else 400;
* ``GET /v1/files/{id}/content``;
* ``POST /v1/batches`` (``input_file_id``, ``endpoint`` = ``/v1/chat/completions``, ``completion_window``
  = ``24h``), ``GET /v1/batches`` (newest first, ``limit`` / ``after``) and ``GET /v1/batches/{id}``: a new
  batch is ``validating``, its first ``polls - 1`` retrievals say ``in_progress``, the ``polls``-th ends it
  (``completed``, or ``expired`` when a line expired) with ``request_counts``, ``output_file_id`` and
  ``error_file_id``.

Each request line is answered with a chat completion whose content is ``answer(body)`` (by default a
valid judge answer, as the fault server gives), in the result-line format (``id``, ``custom_id``,
``response`` {``status_code``, ``request_id``, ``body``}, ``error``). Faults, each served once per
custom id (so the same request answers normally in a later batch): ids in :attr:`expire` (or every
``expire_every``-th line) expire (an error-file line with code ``batch_expired``, or no line at all
when ``expired_lines == "missing"``); ids in :attr:`fail` (or every ``fail_every``-th line) get a 500
line in the error file; ``fail_batches`` makes the next batches fail validation as a whole (status
``failed``, ``errors``, no files); ``http_faults`` entries ``("POST /v1/batches", 500)`` answer the next
matching call with that status. Every request must carry ``Authorization: Bearer <key>`` (else 401,
echoing what it got); ``echo_key`` puts the key in every injected error message, to test redaction.
:attr:`seen` records each request (method, path, Authorization header, status).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable

import jsonschema
from aiohttp import web

from quantmedic.judge.batch_files import CHAT_URL, REQUEST_LINE_SCHEMA

from .fault_server import answer_for

_VALIDATOR = jsonschema.Draft202012Validator(REQUEST_LINE_SCHEMA)


def judge_answer(body: dict) -> str:
    """A valid judge answer (JSON) for a chat request body, as the fault server computes it."""
    prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
    return json.dumps(answer_for(prompt, "ok", str(body.get("model", ""))))


def _error(status: int, message: str, code: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error", "code": code,
                                        "param": None}}, status=status)


class OpenAIBatchStandin:
    """The stand-in; a context manager that starts and stops it. ``base_url`` ends in ``/v1``."""

    def __init__(self, key: str, *, answer: Callable[[dict], str] = judge_answer, polls: int = 1,
                 echo_key: bool = False):
        self.key, self.answer, self.polls, self.echo_key = key, answer, polls, echo_key
        self.expire: set[str] = set()
        self.fail: set[str] = set()
        self.expire_every = self.fail_every = 0
        self.expired_lines = "error"
        self.fail_batches = 0
        self.http_faults: list[tuple[str, int]] = []
        self.seen: list[dict] = []
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self._faulted: set[str] = set()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def calls(self, method: str, path: str) -> int:
        """How many ``method`` requests for exactly ``path`` came (whatever they were answered)."""
        return sum(1 for s in self.seen if s["method"] == method and s["path"] == path)

    def lines_of(self, file_id: str) -> list[dict]:
        """The JSON lines of a stored file (an upload, an output or an error file)."""
        return [json.loads(t) for t in self.files[file_id]["data"].decode().splitlines() if t.strip()]

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}standin"

    def _echo(self) -> str:
        return f" (key {self.key})" if self.echo_key else ""

    # -- the server ------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate], client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches", self._list)
        app.router.add_get("/v1/batches/{id}", self._retrieve)
        return app

    @web.middleware
    async def _gate(self, request: web.Request, handler) -> web.StreamResponse:
        """Record the request, check its key, serve an injected HTTP fault."""
        seen = {"method": request.method, "path": request.path,
                "authorization": request.headers.get("Authorization"), "status": None}
        self.seen.append(seen)
        given = (request.headers.get("Authorization") or "").removeprefix("Bearer ")
        if given != self.key:
            shown = given if self.echo_key else f"{given[:3]}***{given[-2:]}"
            response = _error(401, f"Incorrect API key provided: {shown}.", "invalid_api_key")
        elif fault := next((f for f in self.http_faults if f"{request.method} {request.path}".startswith(f[0])), None):
            self.http_faults.remove(fault)
            response = _error(fault[1], f"injected {fault[1]}{self._echo()}", "server_error")
        else:
            response = await handler(request)
        seen["status"] = response.status
        return response

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload, purpose = form.get("file"), form.get("purpose")
        if purpose != "batch" or not hasattr(upload, "file"):
            return _error(400, f"expected a multipart `file` with purpose `batch`, got purpose {purpose!r}")
        data = upload.file.read()
        ids: set[str] = set()
        for number, text in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            try:
                line = json.loads(text)
            except ValueError:
                return _error(400, f"line {number} is not JSON", "invalid_file")
            problem = next(iter(_VALIDATOR.iter_errors(line)), None)
            if problem is not None or line["custom_id"] in ids:
                return _error(400, f"line {number}: {problem.message if problem else 'duplicate custom_id'}",
                              "invalid_file")
            ids.add(line["custom_id"])
        return web.json_response(self._store(data, upload.filename or "upload.jsonl", "batch"))

    def _store(self, data: bytes, filename: str, purpose: str) -> dict:
        file_id = self._new_id("file-")
        self.files[file_id] = {"data": data, "object": {
            "id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
            "filename": filename, "purpose": purpose, "status": "processed"}}
        return self.files[file_id]["object"]

    async def _content(self, request: web.Request) -> web.Response:
        stored = self.files.get(request.match_info["id"])
        if stored is None:
            return _error(404, f"No such File object: {request.match_info['id']}")
        return web.Response(body=stored["data"], content_type="application/octet-stream")

    async def _create(self, request: web.Request) -> web.Response:
        asked = await request.json()
        file_id = asked.get("input_file_id")
        if file_id not in self.files or self.files[file_id]["object"]["purpose"] != "batch":
            return _error(400, f"no batch input file {file_id!r}")
        if asked.get("endpoint") != CHAT_URL or asked.get("completion_window") != "24h":
            return _error(400, f"endpoint must be {CHAT_URL} and completion_window 24h, got {asked}")
        batch_id = self._new_id("batch_")
        total = len(self.lines_of(file_id))
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": CHAT_URL, "errors": None, "input_file_id": file_id,
            "completion_window": "24h", "status": "validating", "output_file_id": None, "error_file_id": None,
            "created_at": int(time.time()), "metadata": asked.get("metadata"), "_polls": 0,
            "request_counts": {"total": total, "completed": 0, "failed": 0}}
        return web.json_response(self._shown(self.batches[batch_id]))

    @staticmethod
    def _shown(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    async def _list(self, request: web.Request) -> web.Response:
        newest = sorted(self.batches.values(), key=lambda b: b["id"], reverse=True)
        after = request.query.get("after")
        if after:
            newest = [b for b in newest if b["id"] < after]
        page = newest[: int(request.query.get("limit", 20))]
        return web.json_response({"object": "list", "data": [self._shown(b) for b in page],
                                  "first_id": page[0]["id"] if page else None,
                                  "last_id": page[-1]["id"] if page else None, "has_more": len(newest) > len(page)})

    async def _retrieve(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, f"No such Batch object: {request.match_info['id']}")
        if batch["status"] in ("validating", "in_progress"):
            batch["_polls"] += 1
            if self.fail_batches and batch["status"] == "validating":
                self.fail_batches -= 1
                self._fail_whole(batch)
            elif batch["_polls"] >= self.polls:
                self._end(batch)
            else:
                batch["status"] = "in_progress"
        return web.json_response(self._shown(batch))

    def _fail_whole(self, batch: dict) -> None:
        batch.update(status="failed", failed_at=int(time.time()), request_counts={"total": 0, "completed": 0,
                                                                                    "failed": 0},
                     errors={"object": "list", "data": [{"code": "invalid_request", "line": 1, "param": "body.model",
                                                         "message": f"injected validation failure{self._echo()}"}]})

    def _fault(self, custom_id: str, number: int) -> str | None:
        """``expire``, ``fail`` or None for line ``number`` of a batch; a custom id is faulted once."""
        if custom_id in self._faulted:
            return None
        for kind, ids, every in (("expire", self.expire, self.expire_every), ("fail", self.fail, self.fail_every)):
            if custom_id in ids or (every and number % every == 0):
                self._faulted.add(custom_id)
                return kind
        return None

    def _end(self, batch: dict) -> None:
        """Answer every line of the batch (faults included) and end it."""
        out, errors, expired = [], [], False
        lines = self.lines_of(batch["input_file_id"])
        for number, line in enumerate(lines, 1):
            custom_id, fault = line["custom_id"], self._fault(line["custom_id"], number)
            result = {"id": self._new_id("batch_req_"), "custom_id": custom_id, "response": None, "error": None}
            if fault == "expire":
                expired = True
                if self.expired_lines == "error":
                    errors.append({**result, "error": {"code": "batch_expired", "message": "This request could "
                                                       "not be executed before the completion window expired."}})
            elif fault == "fail":
                body = {"error": {"message": f"The server had an error{self._echo()}", "type": "server_error"}}
                errors.append({**result, "response": {"status_code": 500, "request_id": "req_standin", "body": body}})
            else:
                out.append({**result, "response": {"status_code": 200, "request_id": "req_standin",
                                                   "body": self._completion(line["body"])}})
        batch.update(status="expired" if expired else "completed", completed_at=int(time.time()),
                     request_counts={"total": len(lines), "completed": len(out),
                                     "failed": len(lines) - len(out)})
        for key, results in (("output_file_id", out), ("error_file_id", errors)):
            if results:
                data = "".join(json.dumps(x) + "\n" for x in results).encode()
                batch[key] = self._store(data, f"{batch['id']}_{key}.jsonl", "batch_output")["id"]

    def _completion(self, body: dict) -> dict:
        content = self.answer(body)
        return {"id": self._new_id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()),
                "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop",
                                                     "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70}}

    # -- starting and stopping -------------------------------------------------------------------------

    def start(self) -> OpenAIBatchStandin:
        """Serve on a port the OS picks (bound at once, so no other process can take it meanwhile)."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="openai-batch-standin", daemon=True)
        self._thread.start()
        if not ready.wait(30) or not self.port:
            raise RuntimeError("the OpenAI Batch API stand-in did not start")
        return self

    def _serve(self, ready: threading.Event) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(self.app(), access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
        self.port = runner.addresses[0][1]
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> OpenAIBatchStandin:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

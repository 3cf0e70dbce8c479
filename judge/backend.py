"""The judge backend: any OpenAI-compatible chat endpoint, over aiohttp or the ``openai`` SDK.

Structured output is requested as ``response_format={"type": "json_schema", ...}``; a server that
rejects that (llama.cpp's answers HTTP 500 "Input should be 'text' or 'json_object'") is switched,
once and for the rest of the run, to ``{"type": "json_object", "schema": ...}``. Transport
failures (429, 5xx, timeouts, dropped connections) are retried with backoff; other 4xx are not.

Two transports carry the requests, into one retry loop. ``aiohttp`` (the default) posts the JSON
with aiohttp directly, reading the environment's proxy settings (``HTTPS_PROXY``, ``NO_PROXY``, ...)
once; ``sdk`` goes through the ``openai`` SDK's generic ``client.post`` over its aiohttp client (same
auth, headers and error classes as ``create``, without its request transform and response models),
at about twice the client CPU per request (see ``benchmarks/README.md``), for set-ups only it handles.

With replicas (several URLs serving one model), each request goes to the replica with the fewest in
flight (ties in turn), one transport each; a replica whose connection is refused or dropped is left
out for a while (0.5 s, doubling up to 30 s) and the request goes at once to another, without using
up a retry; 429, 5xx and timeouts are retried after the usual wait, on another replica if there is one.

A server that cannot be reached at all (connection refused, unknown host, no route, TLS failure,
not an http(s) URL) before it has answered once is a wrong ``--base-url``, not a transient fault:
:class:`EndpointUnreachable` is raised at once, with no retries (with replicas: once every replica
has been tried so and none has ever answered). Once a server has answered, a refused connection is
retried like any other dropped connection (a server restarting).

Every error text is passed through :func:`~quantmedic.judge.cache.redact` (with the endpoint's key)
where it is made, and so is every answer's content: a key a server echoes never goes further.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
import openai
import yarl

from .cache import Completion, clean
from .prompt import DEFAULT_PROMPT, SystemPrompt
from .retry import RetryPolicy, is_retryable_status, parse_retry_after
from .schema import SCHEMA_NAME

ResponseFormat = Literal["auto", "json_schema", "json_object"]
DEFAULT_TRANSPORT = "aiohttp"
"""The transport unless ``--transport`` says otherwise (see the module's docstring)."""
FATAL_STATUSES = (401, 403, 404)
"""Statuses that mean the endpoint, key or model is wrong: the whole run stops."""


class RequestRejected(Exception):
    """The server refused a request with a non-retryable status."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(f"HTTP {status}: {message}")

    @property
    def fatal(self) -> bool:
        return self.status in FATAL_STATUSES


class TransportFailure(Exception):
    """Every retry of a request failed with a retryable error (429, 5xx, timeout, connection)."""


class Deferred(Exception):
    """The request was handed to a batch executor (``vllm run-batch``, the OpenAI Batch API): its
    answer comes into the cache in a later pass, and the item waits for it."""


class EndpointUnreachable(Exception):
    """The endpoint could not be reached at all before it ever answered: a wrong ``--base-url``."""

    def __init__(self, url: str, why: str):
        self.url, self.why = clean(url), why
        super().__init__(f"cannot connect to {self.url} ({why})")


@dataclass(frozen=True)
class Endpoint:
    """Where a judge model is served. The API key is never part of its repr or of any cache key."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    response_format: ResponseFormat = "auto"
    identity: str = ""
    """What the cache knows this server's model as; defaults to ``base_url|model`` (see
    :attr:`cache_identity`)."""
    name: str = ""
    """The judge's name in verdicts and reports; defaults to the model name (+ the prompt's name)."""
    prompt: SystemPrompt = DEFAULT_PROMPT
    """What this judge is told (its system prompt)."""
    replicas: tuple[str, ...] = ()
    """More base URLs serving the same model, sharing the load with ``base_url``."""

    @property
    def label(self) -> str:
        base = self.name or self.model
        return base if self.prompt == DEFAULT_PROMPT else f"{base}+{self.prompt.name}"

    @property
    def base_urls(self) -> tuple[str, ...]:
        """Every URL this model is served at: ``base_url``, then the replicas."""
        return (self.base_url, *self.replicas)

    @property
    def cache_identity(self) -> str:
        """``base_url|model``; with replicas, ``replicas|`` + the sorted set of URLs + ``|model``, the same
        whichever replica answers and in whatever order the URLs are given.

        >>> Endpoint("http://b:1/v1/", "m", replicas=("http://a:1/v1",)).cache_identity
        'replicas|http://a:1/v1|http://b:1/v1|m'
        """
        if self.identity:
            return self.identity
        urls = sorted({url.rstrip("/") for url in self.base_urls})
        return f"{urls[0]}|{self.model}" if len(urls) == 1 else f"replicas|{'|'.join(urls)}|{self.model}"


def api_key_from_env(variable: str) -> str | None:
    return os.environ.get(variable) or None


class HttpStatusError(Exception):
    """The server answered with an error status."""

    def __init__(self, status: int, message: str, retry_after: str | None = None):
        self.status, self.message, self.retry_after = status, message, retry_after
        super().__init__(f"HTTP {status}: {message}")


class RequestTimeout(Exception):
    """The request took longer than the timeout."""


class ConnectionFailed(Exception):
    """The connection could not be made or was dropped; ``unreachable`` says why no server was reached
    at all (refused, unknown host, ...), None when one was (a dropped connection)."""

    def __init__(self, message: str, unreachable: str | None = None):
        self.unreachable = unreachable
        super().__init__(message)


_CONNECT_ERRNOS = {errno.ECONNREFUSED: "connection refused", errno.EHOSTUNREACH: "no route to host",
                   errno.ENETUNREACH: "network unreachable", errno.EADDRNOTAVAIL: "address not available"}
_NOT_HTTP = tuple(getattr(aiohttp.client_exceptions, name) for name in ("InvalidURL", "NonHttpUrlClientError")
                  if hasattr(aiohttp.client_exceptions, name))


def unreachable_reason(error: BaseException | None) -> str | None:
    """Why ``error`` (or an error it was raised from) means no server was reached at all, or None.

    The openai SDK's aiohttp client reports a refused connection as a *timeout*; the cause it was
    raised from still says what happened, so the chain of causes is read, not the outer class.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, aiohttp.ClientConnectorError):
            os_error = error.os_error
            if isinstance(os_error, socket.gaierror):
                return "unknown host"
            if isinstance(os_error, ssl.SSLError):
                return f"TLS failure: {os_error.reason or os_error}"
            return _CONNECT_ERRNOS.get(os_error.errno, os_error.strerror or str(os_error) or "cannot connect")
        if isinstance(error, _NOT_HTTP) or type(error).__name__ == "UnsupportedProtocol":
            return "not an http:// or https:// URL"
        error = error.__cause__ or error.__context__
    return None


def _rejects_json_schema(error: HttpStatusError) -> bool:
    return error.status in (400, 422, 500) and any(
        word in error.message for word in ("json_schema", "json_object", "response_format"))


_CHAT_COMPLETIONS = "/chat/completions"


def response_format_for(mode: ResponseFormat, schema: dict) -> dict:
    """The ``response_format`` request field for a mode (``auto`` starts as ``json_schema``)."""
    if mode == "json_object":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": True}}


def _completion_from(body: bytes, key: str | None = None) -> Completion:
    """The first choice of a chat completion response body (read as JSON, without the SDK's models), its
    content :func:`~quantmedic.judge.cache.clean`\\ ed (of ``key`` too)."""
    try:
        data = json.loads(body)
    except ValueError:
        raise TransportFailure("the server's answer is not JSON") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise TransportFailure("the server returned no choices")
    choice, usage = choices[0], data.get("usage")
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    usage = usage if isinstance(usage, dict) else {}
    return Completion(clean(message.get("content"), key), choice.get("finish_reason"), usage.get("prompt_tokens") or 0,
                      usage.get("completion_tokens") or 0)


def _error_message(body: bytes) -> str:
    """The message of an OpenAI-style error body (``{"error": {"message": ...}}``), else its text."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:300]
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        return str(error.get("message") or error.get("detail") or error)[:300]
    return str(error)[:300]


class SdkTransport:
    """POSTs chat completions through the ``openai`` SDK (its aiohttp client, no SDK retries)."""

    def __init__(self, endpoint: Endpoint, timeout: float):
        self.key = endpoint.api_key
        self.client = openai.AsyncOpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key or "not-needed",
                                         max_retries=0, timeout=timeout,
                                         http_client=openai.DefaultAioHttpClient(timeout=timeout))

    async def post_chat(self, payload: dict) -> bytes:
        try:
            return await self.client.post(_CHAT_COMPLETIONS, cast_to=bytes, body=payload,
                                          options={"security": {"bearer_auth": True}})
        except openai.APIStatusError as error:
            raise HttpStatusError(error.status_code, clean(str(error.message), self.key)[:300],
                                  error.response.headers.get("retry-after")) from None
        except openai.APITimeoutError as error:
            if (why := unreachable_reason(error)) is None:
                raise RequestTimeout() from None
            raise ConnectionFailed(why, why) from None
        except openai.APIConnectionError as error:
            raise ConnectionFailed(clean(str(error.__cause__ or error), self.key), unreachable_reason(error)) from None

    async def close(self) -> None:
        await self.client.close()


class AiohttpTransport:
    """POSTs chat completions with aiohttp directly: the same request, a fraction of the client CPU."""

    def __init__(self, endpoint: Endpoint, timeout: float):
        self.url = endpoint.base_url.rstrip("/") + _CHAT_COMPLETIONS
        self.key = endpoint.api_key
        self.headers = {"Content-Type": "application/json"}
        if endpoint.api_key:
            self.headers["Authorization"] = f"Bearer {endpoint.api_key}"
        try:  # the environment's proxy, read once (a session with trust_env=True reads it per request: ~0.6 ms CPU)
            proxy, auth = aiohttp.helpers.get_env_proxy_for_url(yarl.URL(self.url))
            self.proxy, self.proxy_headers = str(proxy), {"Proxy-Authorization": auth.encode()} if auth else None
        except LookupError:
            self.proxy = self.proxy_headers = None
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def post_chat(self, payload: dict) -> bytes:
        if self._session is None:  # made inside the running event loop
            self._session = aiohttp.ClientSession(timeout=self.timeout, connector=aiohttp.TCPConnector(limit=0))
        try:
            async with self._session.post(self.url, data=json.dumps(payload).encode(), headers=self.headers,
                                          proxy=self.proxy, proxy_headers=self.proxy_headers) as response:
                body = await response.read()
                if response.status >= 400:
                    raise HttpStatusError(response.status, clean(_error_message(body), self.key),
                                          response.headers.get("Retry-After"))
                return body
        except asyncio.TimeoutError:
            raise RequestTimeout() from None
        except aiohttp.ClientError as error:
            raise ConnectionFailed(clean(str(error), self.key), unreachable_reason(error)) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


TRANSPORTS = {"sdk": SdkTransport, "aiohttp": AiohttpTransport}
BENCH_FIRST, BENCH_LONGEST = 0.5, 30.0  # seconds a replica whose connection failed is left out (doubling)


@dataclass(eq=False)
class Replica:
    """One URL of an endpoint, its transport, and what this run has seen of it: whether it ever answered
    (any HTTP status), why it could not be reached at all before it did (None: it could, or untried)."""

    url: str
    transport: SdkTransport | AiohttpTransport
    in_flight: int = 0
    reached: bool = False
    unreachable: str | None = None
    failures: int = 0
    benched_until: float = 0.0

    async def post(self, payload: dict) -> bytes:
        self.in_flight += 1
        try:
            body = await self.transport.post_chat(payload)
        except HttpStatusError:
            self.reached, self.failures, self.benched_until = True, 0, 0.0
            raise
        finally:
            self.in_flight -= 1
        self.reached, self.failures, self.benched_until = True, 0, 0.0
        return body

    def bench(self, unreachable: str | None) -> None:
        """Leave it out for a while after a refused or dropped connection."""
        self.unreachable = self.unreachable or (None if self.reached else unreachable)
        self.benched_until = time.monotonic() + min(BENCH_LONGEST, BENCH_FIRST * 2 ** self.failures)
        self.failures += 1


class ChatBackend:
    """Sends chat completions to one endpoint (spread over its replicas) with bounded retries."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 120.0, policy: RetryPolicy = RetryPolicy(),
                 transport: str = DEFAULT_TRANSPORT):
        self.endpoint = endpoint
        self.policy = policy
        self.mode: ResponseFormat = "json_schema" if endpoint.response_format == "auto" else endpoint.response_format
        self._may_fall_back = endpoint.response_format == "auto"
        make = TRANSPORTS[transport]
        self.replicas = [Replica(url, make(dataclasses.replace(endpoint, base_url=url, replicas=()), timeout))
                         for url in endpoint.base_urls]
        self._turn = 0

    @property
    def reached(self) -> bool:
        return any(r.reached for r in self.replicas)

    def response_format(self, schema: dict) -> dict:
        return response_format_for(self.mode, schema)

    def pick(self, avoid: Replica | None = None) -> Replica:
        """Of the replicas not benched (other than ``avoid`` if there are others), the one with the fewest
        requests in flight, ties in turn; when all are benched, the one back soonest."""
        if len(self.replicas) == 1:
            return self.replicas[0]
        now = time.monotonic()
        ready = [r for r in self.replicas if r.benched_until <= now]
        ready = [r for r in ready if r is not avoid] or ready
        if not ready:
            return min(self.replicas, key=lambda r: r.benched_until)
        self._turn += 1
        return min((ready[(self._turn + i) % len(ready)] for i in range(len(ready))), key=lambda r: r.in_flight)

    async def complete(self, messages: list[dict], schema: dict, params: dict,
                       on_retry: Callable[[str], None] | None = None) -> Completion:
        """One completion (its content :func:`~quantmedic.judge.cache.clean`\\ ed); raises
        :class:`RequestRejected`, :class:`TransportFailure` or :class:`EndpointUnreachable`."""
        retry, failovers, replica = 0, len(self.replicas) - 1, None
        while True:
            replica, failover = self.pick(avoid=replica), False
            payload = {"model": self.endpoint.model, "messages": messages,
                       "response_format": self.response_format(schema), **params}
            try:
                return _completion_from(await replica.post(payload), self.endpoint.api_key)
            except HttpStatusError as error:
                if self._may_fall_back and self.mode == "json_schema" and _rejects_json_schema(error):
                    self.mode, replica = "json_object", None
                    continue
                if not is_retryable_status(error.status):
                    raise RequestRejected(error.status, error.message) from None
                reason, retry_after = f"HTTP {error.status}", parse_retry_after(error.retry_after)
            except RequestTimeout:
                reason, retry_after = "timeout", None
            except ConnectionFailed as error:
                replica.bench(error.unreachable)
                if not self.reached and all(r.unreachable for r in self.replicas):
                    raise EndpointUnreachable(", ".join(r.url for r in self.replicas), error.unreachable) from None
                reason, retry_after = f"connection error ({error})", None
                failover = failovers > 0 and self.pick(avoid=replica).benched_until <= time.monotonic()
            if failover:
                failovers -= 1  # at once, to another replica, without using up a retry
            elif retry >= self.policy.max_retries:
                raise TransportFailure(f"{reason} after {retry + 1} tries")
            if on_retry:
                on_retry(reason)
            if not failover:
                await asyncio.sleep(self.policy.delay(retry, retry_after))
                retry += 1

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.transport.close()

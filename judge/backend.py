"""The judge backend: any OpenAI-compatible chat endpoint, through the ``openai`` SDK.

Structured output is requested as ``response_format={"type": "json_schema", ...}``; a server that
rejects that (llama.cpp's answers HTTP 500 "Input should be 'text' or 'json_object'") is switched,
once and for the rest of the run, to ``{"type": "json_object", "schema": ...}``. Transport
failures (429, 5xx, timeouts, dropped connections) are retried with backoff; other 4xx are not.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import openai

from .cache import Completion
from .retry import RetryPolicy, is_retryable_status, parse_retry_after
from .schema import SCHEMA_NAME

ResponseFormat = Literal["auto", "json_schema", "json_object"]
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


@dataclass(frozen=True)
class Endpoint:
    """Where a judge model is served. The API key is never part of its repr or of any cache key."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    response_format: ResponseFormat = "auto"
    identity: str = ""
    """What the cache knows this server's model as; defaults to ``base_url|model``."""

    @property
    def cache_identity(self) -> str:
        return self.identity or f"{self.base_url.rstrip('/')}|{self.model}"


def api_key_from_env(variable: str) -> str | None:
    return os.environ.get(variable) or None


def _rejects_json_schema(error: openai.APIStatusError) -> bool:
    text = str(error.message or "") + str(getattr(error, "body", "") or "")
    return error.status_code in (400, 422, 500) and any(
        word in text for word in ("json_schema", "json_object", "response_format"))


def response_format_for(mode: ResponseFormat, schema: dict) -> dict:
    """The ``response_format`` request field for a mode (``auto`` starts as ``json_schema``)."""
    if mode == "json_object":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": True}}


class ChatBackend:
    """Sends chat completions to one endpoint with bounded retries."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 120.0, policy: RetryPolicy = RetryPolicy(),
                 use_aiohttp: bool = True):
        self.endpoint = endpoint
        self.policy = policy
        self.mode: ResponseFormat = "json_schema" if endpoint.response_format == "auto" else endpoint.response_format
        self._may_fall_back = endpoint.response_format == "auto"
        http_client = openai.DefaultAioHttpClient(timeout=timeout) if use_aiohttp else None
        self.client = openai.AsyncOpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key or "not-needed",
                                         max_retries=0, timeout=timeout, http_client=http_client)

    def response_format(self, schema: dict) -> dict:
        return response_format_for(self.mode, schema)

    async def complete(self, messages: list[dict], schema: dict, params: dict,
                       on_retry: Callable[[str], None] | None = None) -> Completion:
        """One completion; raises :class:`RequestRejected` or :class:`TransportFailure`."""
        retry = 0
        while True:
            try:
                response = await self.client.chat.completions.create(
                    model=self.endpoint.model, messages=messages, response_format=self.response_format(schema),
                    **params)
                if not response.choices:
                    raise TransportFailure("the server returned no choices")
                choice = response.choices[0]
                usage = response.usage
                return Completion(choice.message.content, choice.finish_reason,
                                  usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)
            except openai.APIStatusError as error:
                if self._may_fall_back and self.mode == "json_schema" and _rejects_json_schema(error):
                    self.mode = "json_object"
                    continue
                if not is_retryable_status(error.status_code):
                    raise RequestRejected(error.status_code, str(error.message)[:300]) from None
                reason = f"HTTP {error.status_code}"
                retry_after = parse_retry_after(error.response.headers.get("retry-after"))
            except openai.APITimeoutError:
                reason, retry_after = "timeout", None
            except openai.APIConnectionError as error:
                reason, retry_after = f"connection error ({error.__cause__ or error})", None
            if retry >= self.policy.max_retries:
                raise TransportFailure(f"{reason} after {retry + 1} tries")
            if on_retry:
                on_retry(reason)
            await asyncio.sleep(self.policy.delay(retry, retry_after))
            retry += 1

    async def close(self) -> None:
        await self.client.close()

"""A persistent store of judge responses (SQLite in WAL mode), keyed by a hash of the request.

Each response is written as soon as it arrives, so a run killed half way loses nothing that was
answered, and a rerun sends only the requests whose key is missing. Only answers the server
actually returned are stored (valid or not); transport failures are not, so they are re-sent.

:func:`redact` is the one redaction function: every error text (reasons, log lines, the messages of
exceptions), every stored row and every answer passes through it, so an API key that a server
echoes in an error body (some providers do) never reaches a verdict, the cache or the terminal.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.outputs import check_creatable


_SECRETS = (
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{12,}"), r"\1[redacted]"),  # Authorization: Bearer ...
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "sk-[redacted]"),  # OpenAI-style keys: sk-..., sk-proj-...
    (re.compile(r"(://[^/@\s:]*:)[^/@\s]+@"), r"\1[redacted]@"),  # https://user:password@host
    (re.compile(r"(?i)([?&](?:api[_-]?key|access[_-]?token|token|key)=)[^&#\s\"']+"), r"\1[redacted]"),
)
MIN_SECRET_LENGTH = 8
"""A configured key shorter than this is not searched for literally (it would blank ordinary words)."""


def redact(text: str, *secrets: str | None) -> str:
    """``text`` without the given ``secrets`` or anything shaped like a bearer token, an ``sk-`` key,
    a URL password or a key in a query string.

    >>> redact("Incorrect API key provided: sk-abc123456789. Header: Bearer tok_0123456789")
    'Incorrect API key provided: sk-[redacted]. Header: Bearer [redacted]'
    >>> redact("bad key my-secret-value", "my-secret-value")
    'bad key [redacted]'
    """
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH and secret in text:
            text = text.replace(secret, "[redacted]")
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def scrub(text: str) -> str:
    """``text`` with lone UTF-16 surrogates (which JSON escapes can produce, and which neither SQLite
    nor a JSONL file can hold) replaced by U+FFFD; well-formed text is returned unchanged.

    >>> scrub("a\\ud800b") == "a\\ufffdb", scrub("ok")
    (True, 'ok')
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def clean(text: str | None, *secrets: str | None) -> str | None:
    """:func:`scrub` then :func:`redact` (None stays None): what every stored or shown text goes through."""
    return None if text is None else redact(scrub(text), *secrets)


@dataclass(frozen=True)
class Completion:
    """One chat completion as the judge sees it."""

    content: str | None
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0


def schema_digest(schema: dict) -> str:
    """SHA-256 of a schema's canonical JSON (computed once per run, then part of every key)."""
    return hashlib.sha256(json.dumps(schema, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def request_key(messages: list[dict], model: str, params: dict, schema_sha: str) -> str:
    """SHA-256 of everything that determines a response: prompt, model, parameters and schema digest.

    Each message enters as its role and the SHA-256 of its content (hashing the long, shared system
    message is cheaper than JSON-encoding it for every request).
    """
    prompt = [(m["role"], hashlib.sha256(m["content"].encode("utf-8")).hexdigest()) for m in messages]
    payload = json.dumps({"messages": prompt, "model": model, "params": params, "schema": schema_sha},
                         sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


SQLITE_HEADER = b"SQLite format 3\x00"


def check_cache(path: str | Path) -> Path:
    """``path`` can be the answer cache: not a folder, not under a file, and SQLite if it exists and is not
    empty; else an :class:`InputError` (``--cache`` / ``$QUANTMEDIC_CACHE_DIR``). Creates nothing."""
    path = Path(path)
    where = "the answer cache (--cache FILE, or $QUANTMEDIC_CACHE_DIR/judge-responses.sqlite)"
    if path.is_dir():
        raise InputError(path, f"is a folder, not a file: {where} is an SQLite file", usage=True)
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except (FileNotFoundError, NotADirectoryError):
        header = None
    except OSError as error:
        raise InputError(path, f"cannot read {where}: {error.strerror}") from None
    if header and header != SQLITE_HEADER:
        raise InputError(path, f"is not an SQLite file, so it cannot be {where}; choose another --cache")
    try:
        check_creatable(path, "--cache")
    except InputError as error:
        raise InputError(path, f"{error.message}: {where}", usage=True) from None
    return path


class ResponseCache:
    """SQLite store of completions. Safe to open from several processes at once (WAL)."""

    def __init__(self, path: str | Path):
        self.path = check_cache(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, content TEXT, "
                "finish_reason TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, created REAL)")
        except sqlite3.Error as error:
            raise InputError(self.path, f"cannot open the answer cache ({error}); choose another --cache") from None

    def get(self, key: str) -> Completion | None:
        row = self._db.execute("SELECT content, finish_reason, prompt_tokens, completion_tokens FROM responses "
                               "WHERE key = ?", (key,)).fetchone()
        if not row:
            return None
        content, finish_reason, prompt_tokens, completion_tokens = row
        return Completion(clean(content), finish_reason, prompt_tokens, completion_tokens)

    def put(self, key: str, model: str, completion: Completion) -> None:
        """Store one completion; its text and the model identity are :func:`clean`\\ ed first."""
        self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (key, clean(model), clean(completion.content), completion.finish_reason,
                          completion.prompt_tokens,
                          completion.completion_tokens, time.time()))

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def default_cache_path() -> Path:
    """``$QUANTMEDIC_CACHE_DIR/judge-responses.sqlite``, else under ``~/.cache/quantmedic``."""
    base = os.environ.get("QUANTMEDIC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "quantmedic")
    return Path(base) / "judge-responses.sqlite"

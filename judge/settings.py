"""The judge's settings, declared once: ``quantmedic judge`` / ``judge-eval`` take their options'
defaults from :class:`JudgeSettings`, and a study config's ``judge:`` section embeds it.

:func:`build_job` is the one builder of a :class:`~quantmedic.judge.job.JudgeJob`.

An endpoint is an ``http://`` or ``https://`` URL with a host (anything else is refused when the
settings are made). The API key is read from ``api_key_env``: when that variable is unset or empty,
:func:`missing_key_warning` says so, and :func:`build_job` refuses to send key-less requests to any
host that is not this machine (127.0.0.0/8, ``localhost``, ``::1``).

``--base-url`` and ``--model`` pair up so: one URL serves every model; as many URLs as models, one
each; several URLs and one model are replicas of that one judge (one
:class:`~quantmedic.judge.backend.Endpoint` with ``replicas``, whose cache identity is the sorted set
of its URLs and the model, so a rerun with the URLs in another order answers from the cache). Any
other count is refused, naming ``base_url``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from quantmedic.taxonomy.errors import FieldError, InputError
from quantmedic.taxonomy.model import Taxonomy

from .backend import DEFAULT_TRANSPORT, Endpoint, api_key_from_env
from .cache import default_cache_path, redact
from .checker_tier import CATEGORY, SUBTYPE, CheckerMode, can_gate
from .embedded import EmbeddedJudgeUnavailable, find_gguf
from .job import JudgeJob
from .prompt import DEFAULT_PROMPT, load_prompt
from .retry import RetryPolicy
from .scan import ThinkingSettings
from .tokens import counting_with, estimating

EMBEDDED_CONTEXT = 4096
"""The embedded judge's context, unless --context-tokens says otherwise."""
REMOTE_CONTEXT = 32768


class JudgeSettings(BaseModel):
    """Which judges answer, and how they are asked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: list[str] = Field(default_factory=list, description=(
        "OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1. Give one for all "
        "--model, one per --model, or several for one --model: replicas of that judge sharing the load (each "
        "request to the least busy; one that fails is retried on another; one cache for all, whatever their "
        "order). None: start the embedded SmolLM2 judge."))
    models: list[str] = Field(default_factory=list, description=(
        "Judge model name; repeat for several judges (the verdict keeps each answer and the majority)."))
    api_key_env: str = Field("OPENAI_API_KEY", description=(
        "Environment variable holding the API key (never logged; redacted from every message, verdict and cache "
        "row, as is anything shaped like a bearer token or sk- key). Unset or empty: a warning, and the run is "
        "refused unless every --base-url is on this machine (127.0.0.0/8, localhost, ::1)."))
    samples: int = Field(1, ge=1, description="Answers per judge per item (k samples, majority vote); use a "
                                              "temperature above 0.")
    temperature: float = Field(0.0, ge=0.0)
    max_tokens: int = Field(512, ge=16, description="Token limit of one judge answer.")
    seed: int = Field(0, description="Sampling seed (sample i uses seed + i).")
    concurrency: int | None = Field(None, ge=1, description=(
        "Requests in flight at once (default 16; 2 for the embedded judge, which serves one at a time)."))
    timeout: float = Field(120.0, ge=1.0, description="Seconds per request.")
    max_retries: int = Field(6, ge=0, description=(
        "Retries per request on 429/5xx/timeouts, with exponential backoff and jitter, honouring Retry-After."))
    max_delay: float = Field(60.0, ge=0.0, description="Longest wait between retries, in seconds.")
    invalid_retries: int = Field(2, ge=0, description=(
        "Re-asks after an invalid or truncated answer before the item is recorded as unscored."))
    response_format: Literal["auto", "json_schema", "json_object"] = Field("auto", description=(
        "auto (json_schema, falling back to json_object + schema when the server refuses it), json_schema or "
        "json_object."))
    transport: Literal["aiohttp", "sdk"] = Field(DEFAULT_TRANSPORT, description=(
        "aiohttp (direct aiohttp, reading proxy settings from the environment once: half the client CPU of sdk) "
        "or sdk (the openai SDK's client, for a set-up only it handles)."))
    prompts: list[Path] = Field(default_factory=list, description=(
        "A system-prompt template file for the judge(s) (placeholders {taxonomy}, {schema}, {taxonomy_name}, "
        "{none}); one for all, or one per --model, e.g. the same model twice with two prompts to compare them."))
    price_input: float | None = Field(None, description="USD per million prompt tokens, for the cost.")
    price_output: float | None = Field(None, description="USD per million completion tokens.")
    retry_unscored: bool = Field(False, description=(
        "Re-ask the judges whose cached answers were invalid (unparsable, off-schema, truncated), as a new "
        "sample: a new seed (seed + 1000000 x round) and a new cache entry, once per run (and with the usual "
        "--invalid-retries). The invalid answers stay in the cache for audit; the new answer replaces the "
        "unscored verdict, and later runs, with or without this flag, use the newest cached sample. Failed "
        "requests (HTTP errors, timeouts) are never cached and are re-sent by any rerun. At temperature 0 a "
        "deterministic server may give the same answer again."))

    scope: Literal["solution", "thinking", "both"] = Field("solution", description=(
        "What is judged: solution (the steps after any thinking, as always), thinking (a reasoning model's thinking, "
        "in windows of sections that fit the judge's context, scanned forward to the first window with an error: "
        "the verdict's first_wrong_section), or both (the thinking, then the solution: first_wrong_step too; the "
        "category is the first error's). Attempts without thinking are judged on their solution, and counted."))
    context_tokens: int | None = Field(None, ge=512, description=(
        "The judge's context length in tokens, which every window request (prompt, answer and one re-ask) fits. "
        "Default: 4096 for the embedded judge (started with that context), else 32768."))
    context_share: float = Field(0.25, ge=0.0, le=0.75, description=(
        "Share of a window's room given to the sections before it (already checked, shown for context)."))
    tokenizer: Path | None = Field(None, description=(
        "The judge's tokenizer, to count window sizes exactly: a .gguf model file or an HF tokenizer.json. Default: "
        "the embedded judge's own; for other judges tokens are estimated with --chars-per-token."))
    chars_per_token: float = Field(3.0, ge=0.5, description=(
        "Characters per token to estimate sizes with when no tokenizer counts them (lower is safer: R1 thinking "
        "runs at 2.3 characters per token with SmolLM2's tokenizer, 1.1 where it is in Chinese)."))
    checker: Literal["auto", "off", "hint", "gate"] = Field("auto", description=(
        "The deterministic step checker before the judge (claimed computations evaluated exactly): hint (its "
        "findings go into the judge's prompt as facts), gate (the judge is asked only whether a step before the "
        "checked error is wrong; if none is, the checked error is the verdict, decided by the checker), off, or "
        "auto (gate for the embedded judge, whose own diagnoses are weak; off for a judge you name). Every "
        "verdict records the layer that decided; a judge placing the first error after a checked error is "
        "flagged as a conflict. Scope solution only."))
    max_tokens_per_item: int | None = Field(None, ge=1, description=(
        "Cap on an item's estimated thinking tokens (each window's prompt plus --max-tokens, every judge and "
        "sample): windows past it are not sent and the item is unscored, saying which sections were clean. A "
        "rerun with a higher cap completes it in place."))

    @field_validator("base_url", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [] if value is None else [value] if isinstance(value, str) else value

    @field_validator("base_url")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            try:
                parts = urlsplit(url)
                parts.port  # noqa: B018 (raises on a port that is not a number)
            except ValueError:
                parts = None
            if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{redact(url)!r} is not an http:// or https:// URL with a host (for example "
                                 "http://127.0.0.1:8000/v1 or https://api.openai.com/v1)")
        return urls

    @model_validator(mode="after")
    def _judges(self) -> JudgeSettings:
        urls, models, prompts = self.base_url, self.models, self.prompts
        if urls and not models:
            raise FieldError("models", "give the judge model served at --base-url")
        if models and not urls:
            raise FieldError("base_url", "give the endpoint that serves --model")
        if len(models) > 1 and len(urls) not in (1, len(models)):
            raise FieldError("base_url", "give one --base-url for all --model, one per --model, or several for one "
                                         "--model (its replicas)")
        if len(models) == 1 and len({u.rstrip("/") for u in urls}) < len(urls):
            raise FieldError("base_url", "the same --base-url twice: give each replica once")
        if len(prompts) not in (0, 1, max(1, len(models))):
            raise FieldError("prompts", "give one --prompt, or one per --model")
        judges = [(_pick(urls, i), m, _pick(prompts, i)) for i, m in enumerate(models)]
        if len(set(judges)) < len(judges):
            raise FieldError("models", "the same model twice on one endpoint with one prompt: use --samples")
        return self


def _pick(values: list, i: int):
    """One value for all, or the i-th of one per judge (None when there are none)."""
    return values[0] if len(values) == 1 else values[i] if values else None


def endpoints_of(settings: JudgeSettings) -> tuple[Endpoint, ...]:
    """The configured judges (empty: the embedded judge); prompt files are read here."""
    prompts = [load_prompt(p) for p in settings.prompts]
    urls, models = settings.base_url, settings.models
    replicas = tuple(urls[1:]) if len(models) == 1 else ()  # one model, several URLs: its replicas
    judges = [(_pick(urls, i), m, _pick(prompts, i) or DEFAULT_PROMPT) for i, m in enumerate(models)]
    on_several_servers = {m for m in models if len({u for u, mm, _ in judges if mm == m}) > 1}
    key = api_key_from_env(settings.api_key_env)
    return tuple(Endpoint(base_url=url, model=m, api_key=key, response_format=settings.response_format, prompt=p,
                          name=f"{m}@{_host(url)}" if m in on_several_servers else "", replicas=replicas)
                 for url, m, p in judges)


def _host(url: str) -> str:
    """``host:port`` of ``url``, without any user name or password."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def is_local_url(url: str) -> bool:
    """Whether ``url`` names this machine: 127.0.0.0/8, ``::1``, ``localhost`` (or a ``*.localhost`` name).

    >>> [is_local_url(u) for u in ("http://127.0.0.5:8000/v1", "http://[::1]/v1", "http://localhost/v1",
    ...                            "https://api.openai.com/v1", "http://10.0.0.2/v1")]
    [True, True, True, False, False]
    """
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def missing_key_warning(settings: JudgeSettings) -> str | None:
    """A one-line warning when judges are configured but ``api_key_env`` is unset or empty (for local servers
    only when a variable other than the default was named: likely a typo); else None."""
    if not settings.base_url or api_key_from_env(settings.api_key_env):
        return None
    remote = [u for u in settings.base_url if not is_local_url(u)]
    if not remote and settings.api_key_env == JudgeSettings.model_fields["api_key_env"].default:
        return None  # the default variable unset, and only local servers: the usual local set-up, not a typo
    return (f"{settings.api_key_env} (--api-key-env) is not set: requests go without an API key"
            + (f", which {redact(remote[0])} will refuse" if remote else " (fine for a local server without one)"))


def require_api_key(settings: JudgeSettings) -> None:
    """Refuse (:class:`InputError`, exit 2 on the command line) to send key-less requests off this machine."""
    remote = [u for u in settings.base_url if not is_local_url(u)]
    if remote and not api_key_from_env(settings.api_key_env):
        raise InputError("--api-key-env", f"{settings.api_key_env} is not set (or empty), and {redact(remote[0])} is "
                         f"not on this machine: export {settings.api_key_env}=..., or name the variable that holds "
                         "the key with --api-key-env")


def build_job(settings: JudgeSettings, *, input: Path, out: Path | None, taxonomy: Taxonomy, cache: Path | None = None,
              input_format: str = "auto", limit: int | None = None, include_correct: bool = False,
              require_key: bool = True) -> JudgeJob:
    """The job that judges ``input`` into ``out`` with these settings (``require_key=False`` for a job that
    sends nothing, such as a dry run: see :func:`require_api_key`)."""
    if require_key:
        require_api_key(settings)
    endpoints = endpoints_of(settings)
    embedded_prompt = load_prompt(settings.prompts[0]) if settings.prompts and not endpoints else DEFAULT_PROMPT
    return JudgeJob(
        input=input, out=out, taxonomy=taxonomy, endpoints=endpoints, input_format=input_format,
        samples=settings.samples, temperature=settings.temperature, max_tokens=settings.max_tokens, seed=settings.seed,
        concurrency=settings.concurrency or (16 if endpoints else 2), timeout=settings.timeout,
        policy=RetryPolicy(max_retries=settings.max_retries, max_delay=settings.max_delay),
        invalid_retries=settings.invalid_retries, transport=settings.transport, cache=cache or default_cache_path(),
        limit=limit, include_correct=include_correct, price_input=settings.price_input,
        price_output=settings.price_output, embedded_prompt=embedded_prompt, retry_unscored=settings.retry_unscored,
        thinking=thinking_settings(settings, embedded=not endpoints),
        embedded_context=settings.context_tokens or EMBEDDED_CONTEXT,
        checker=checker_mode(settings, taxonomy, embedded=not endpoints))


def checker_mode(settings: JudgeSettings, taxonomy: Taxonomy, *, embedded: bool) -> CheckerMode:
    """The step checker's mode: ``auto`` resolved (gate for the embedded judge, where the taxonomy can record a
    checked error; else off); a mode that cannot work with the scope or taxonomy is refused (exit 2)."""
    if settings.checker == "auto":
        return "gate" if embedded and settings.scope == "solution" and can_gate(taxonomy) else "off"
    if settings.checker != "off" and settings.scope != "solution":
        raise InputError("--checker", f"the step checker reads the solution's steps: --checker {settings.checker} "
                                      "needs --scope solution (or --checker off)", usage=True)
    if settings.checker == "gate" and not can_gate(taxonomy):
        raise InputError("--checker", f"--checker gate records a checked error as {CATEGORY}/{SUBTYPE}, which the "
                                      f"taxonomy {taxonomy.name} lacks: use --checker hint or off", usage=True)
    return settings.checker


def thinking_settings(settings: JudgeSettings, *, embedded: bool) -> ThinkingSettings:
    """What is judged and how a thinking is windowed; tokens are counted by ``--tokenizer``, else by the
    embedded judge's own tokenizer, else estimated (see :mod:`quantmedic.judge.tokens`)."""
    if settings.scope == "solution":
        return ThinkingSettings()
    if settings.tokenizer is not None:
        counter = counting_with(settings.tokenizer)
    elif embedded:
        try:
            counter = counting_with(find_gguf())
        except EmbeddedJudgeUnavailable:  # the run cannot start it either, and says so; a dry run can estimate
            counter = estimating(settings.chars_per_token)
    else:
        counter = estimating(settings.chars_per_token)
    context = settings.context_tokens or (EMBEDDED_CONTEXT if embedded else REMOTE_CONTEXT)
    return ThinkingSettings(scope=settings.scope, context_tokens=context, context_share=settings.context_share,
                            max_tokens_per_item=settings.max_tokens_per_item, counter=counter)

"""The judge's settings, declared once: ``quantmedic judge`` / ``judge-eval`` take their options'
defaults from :class:`JudgeSettings`, and a study config's ``judge:`` section embeds it.

:func:`build_job` is the one builder of a :class:`~quantmedic.judge.job.JudgeJob`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from quantmedic.taxonomy.errors import FieldError
from quantmedic.taxonomy.model import Taxonomy

from .backend import Endpoint, api_key_from_env
from .cache import default_cache_path
from .job import JudgeJob
from .prompt import DEFAULT_PROMPT, load_prompt
from .retry import RetryPolicy


class JudgeSettings(BaseModel):
    """Which judges answer, and how they are asked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: list[str] = Field(default_factory=list, description=(
        "OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1. Give one for all "
        "--model, or one per --model. None: start the embedded SmolLM2 judge."))
    models: list[str] = Field(default_factory=list, description=(
        "Judge model name; repeat for several judges (the verdict keeps each answer and the majority)."))
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key (never logged).")
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
    transport: Literal["sdk", "aiohttp"] = Field("sdk", description=(
        "sdk (the openai SDK) or aiohttp (direct aiohttp: the same requests at about half the client CPU, for bulk "
        "runs on your own servers)."))
    prompts: list[Path] = Field(default_factory=list, description=(
        "A system-prompt template file for the judge(s) (placeholders {taxonomy}, {schema}, {taxonomy_name}, "
        "{none}); one for all, or one per --model, e.g. the same model twice with two prompts to compare them."))
    price_input: float | None = Field(None, description="USD per million prompt tokens, for the cost.")
    price_output: float | None = Field(None, description="USD per million completion tokens.")

    @field_validator("base_url", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [] if value is None else [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _judges(self) -> JudgeSettings:
        urls, models, prompts = self.base_url, self.models, self.prompts
        if urls and not models:
            raise FieldError("models", "give the judge model served at --base-url")
        if models and not urls:
            raise FieldError("base_url", "give the endpoint that serves --model")
        if len(urls) not in (0, 1, len(models)):
            raise FieldError("base_url", "give one --base-url, or one per --model")
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
    judges = [(_pick(settings.base_url, i), m, _pick(prompts, i) or DEFAULT_PROMPT)
              for i, m in enumerate(settings.models)]
    on_several_servers = {m for m in settings.models if len({u for u, mm, _ in judges if mm == m}) > 1}
    key = api_key_from_env(settings.api_key_env)
    return tuple(Endpoint(base_url=url, model=m, api_key=key, response_format=settings.response_format, prompt=p,
                          name=f"{m}@{urlsplit(url).netloc}" if m in on_several_servers else "")
                 for url, m, p in judges)


def build_job(settings: JudgeSettings, *, input: Path, out: Path | None, taxonomy: Taxonomy, cache: Path | None = None,
              input_format: str = "auto", limit: int | None = None, include_correct: bool = False) -> JudgeJob:
    """The job that judges ``input`` into ``out`` with these settings."""
    endpoints = endpoints_of(settings)
    embedded_prompt = load_prompt(settings.prompts[0]) if settings.prompts and not endpoints else DEFAULT_PROMPT
    return JudgeJob(
        input=input, out=out, taxonomy=taxonomy, endpoints=endpoints, input_format=input_format,
        samples=settings.samples, temperature=settings.temperature, max_tokens=settings.max_tokens, seed=settings.seed,
        concurrency=settings.concurrency or (16 if endpoints else 2), timeout=settings.timeout,
        policy=RetryPolicy(max_retries=settings.max_retries, max_delay=settings.max_delay),
        invalid_retries=settings.invalid_retries, transport=settings.transport, cache=cache or default_cache_path(),
        limit=limit, include_correct=include_correct, price_input=settings.price_input,
        price_output=settings.price_output, embedded_prompt=embedded_prompt)

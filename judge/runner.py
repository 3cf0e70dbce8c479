"""Running judges over attempts: degenerate checks, cache look-ups, bounded concurrency, retries on
invalid answers, and the majority across judges. Everything returned is also in the cache.

**Rounds.** An answer is asked in *round* 0 (the item's first request, re-asked with feedback after
each invalid answer). An invalid answer is cached like any other, so a rerun would read it back
for ever; with ``retry_unscored`` a judge whose round ``r`` is in the cache and invalid is asked
again in round ``r + 1``: a new sample (seed ``+ r * RETRY_SEED_STRIDE``, and a cache key of its
own), once per run. The invalid rounds stay in the cache for audit. Every run, with or without
``retry_unscored``, reads the later rounds that are already cached, so the newest sample is used.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial

from pydantic import ValidationError

from quantmedic.taxonomy.model import DEGENERATE, Taxonomy
from quantmedic.taxonomy.records import Attempt, JudgeAnswer, Usage, Verdict, content_id

from .backend import ChatBackend, Deferred, Endpoint, EndpointUnreachable, RequestRejected, TransportFailure
from .checker_tier import CheckerMode, judge_checked
from .cache import Completion, ResponseCache, clean, request_key, schema_digest
from .degenerate import detect_degenerate
from .ensemble import majority
from .prompt import PROMPT_VERSION, build_messages, system_message
from .question import Question
from .scan import ThinkingPlanner, ThinkingSettings, judge_thinking
from .schema import judge_output_schema
from .validate import Invalid, ParsedAnswer, make_validator, validate_answer

NO_JUDGE = "no LLM judge in this run: left for a real judge"
RETRY_SEED_STRIDE = 1_000_000
"""Round r of sample i is asked with seed ``seed + i + r * RETRY_SEED_STRIDE``."""


@dataclass(frozen=True)
class JudgeSpec:
    """One judge: a model on an endpoint, asked ``samples`` times per item."""

    endpoint: Endpoint
    samples: int = 1
    temperature: float = 0.0
    max_tokens: int = 512
    seed: int | None = 0

    @property
    def label(self) -> str:
        return self.endpoint.label

    def params(self, sample: int, round: int = 0) -> dict:
        params: dict = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.seed is not None:
            params["seed"] = self.seed + sample + round * RETRY_SEED_STRIDE
        return params

    def fingerprint(self) -> dict:
        return {"model": self.endpoint.cache_identity, "samples": self.samples, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "seed": self.seed, "prompt": self.endpoint.prompt.template}


@dataclass(frozen=True)
class JudgeConfig:
    """Everything that determines the verdicts: judges, taxonomy, prompt version, retry bound."""

    judges: tuple[JudgeSpec, ...]
    taxonomy: Taxonomy
    max_invalid_retries: int = 2
    thinking: ThinkingSettings = ThinkingSettings()
    checker: CheckerMode = "off"

    def fingerprint(self) -> str:
        """Scope ``solution`` with the checker off has the fingerprint it always had; the others add the scope
        and windows, or the checker's mode."""
        payload = {"judges": [j.fingerprint() for j in self.judges], "prompt": PROMPT_VERSION,
                   "taxonomy": self.taxonomy.fingerprint(), "retries": self.max_invalid_retries}
        if self.thinking.scope != "solution":
            payload["thinking"] = self.thinking.fingerprint()
        if self.checker != "off":
            payload["checker"] = self.checker
        return content_id("cfg", payload)

    @property
    def judge_model(self) -> str:
        return "+".join(dict.fromkeys(j.label for j in self.judges)) or "none"


@dataclass
class RunStats:
    """Counters of one run, for the progress bar and the closing summary."""

    items: int = 0
    done: int = 0
    degenerate: int = 0
    unscored: int = 0
    requests_sent: int = 0
    cache_hits: int = 0
    transport_retries: int = 0
    invalid_answers: int = 0
    usage_sent: Usage = field(default_factory=Usage)
    usage_cached: Usage = field(default_factory=Usage)
    windows: int = 0
    """Windows of thinking judged (every judge asked about each), cached ones included."""
    no_thinking: int = 0
    """Items judged on their solution under scope thinking/both, as they have no thinking."""
    over_cap: int = 0
    """Items left unscored because their windows went past ``max_tokens_per_item``."""
    deferred: int = 0
    """Items waiting for a batch executor's answers (no verdict this pass)."""
    checked_errors: int = 0
    """Items in which the step checker found a false claimed computation."""
    decided: Counter = field(default_factory=Counter)
    """Scored verdicts by the layer that decided them (the others are counted in ``unscored``)."""
    conflicts: int = 0
    """LLM verdicts that put the first error after the checked error, or find none."""


def combine_answers(attempt: Attempt, answers: Sequence[JudgeAnswer], *, judge_model: str, taxonomy: str,
                    config: str) -> Verdict:
    """The verdict on ``attempt`` from its judges' answers: the majority, or unscored when none is valid."""
    common = dict(attempt=attempt, judge_model=judge_model, judges=tuple(answers), taxonomy=taxonomy, config=config)
    vote = majority(answers)
    if vote is None:
        reasons = "; ".join(dict.fromkeys(a.reason or "" for a in answers)) or NO_JUDGE
        return Verdict(status="unscored", reason=reasons,
                       raw_response=answers[0].raw_response if len(answers) == 1 else None, **common)
    return Verdict(status="ok", first_wrong_step=vote.first_wrong_step, category=vote.category,
                   subtype=vote.subtype, explanation=vote.explanation, confidence=vote.confidence,
                   raw_response=vote.raw_response, agreement=vote.agreement, **common)


class JudgeRunAborted(RuntimeError):
    """The endpoint refused in a way no retry can fix (wrong key, model or URL); ``unreachable``: no
    server answered at that URL at all (connection refused, unknown host, no route)."""

    def __init__(self, message: str, *, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable


class _Offline(Exception):
    """A later round's request is not in the cache, and this run does not send new rounds."""


class JudgeRun:
    """Judge attempts with the judges of ``config``; answers are read from and written to ``cache``."""

    def __init__(self, config: JudgeConfig, cache: ResponseCache, backends: dict[str, ChatBackend], *,
                 concurrency: int = 16, on_item_done: Callable[[Verdict, RunStats], None] | None = None,
                 retry_unscored: bool = False):
        self.config = config
        self.retry_unscored = retry_unscored
        self.cache = cache
        self.backends = backends
        self.schema = judge_output_schema(config.taxonomy)
        self.validator = make_validator(self.schema)
        # each judge's system message is the same for every item: built once
        self._systems = {spec: system_message(config.taxonomy, self.schema, spec.endpoint.prompt)
                         for spec in config.judges}
        self._schema_sha = schema_digest(self.schema)
        self.asks = [(spec, sample) for spec in config.judges for sample in range(spec.samples)]
        self.fingerprint = config.fingerprint()
        self.taxonomy_label = f"{config.taxonomy.name}@{config.taxonomy.version}"
        self.thinking = ThinkingPlanner(config)
        self.stats = RunStats()
        self._slots = asyncio.Semaphore(concurrency)
        self._on_item_done = on_item_done

    async def run(self, attempts: Sequence[Attempt]) -> list[Verdict]:
        """Verdicts in the order of ``attempts`` (which must have distinct ids); an item whose request
        a batch executor took (:class:`~.backend.Deferred`) has none in this pass."""
        self.stats.items = len(attempts)
        return [v async for v in self.stream(attempts, window=max(1, len(attempts)))]

    async def stream(self, attempts: Iterable[Attempt], *, window: int = 1024) -> AsyncIterator[Verdict]:
        """Verdicts in the order of ``attempts`` (distinct ids), as they come: at most ``window`` items
        are in hand at once, so memory stays bounded however many attempts there are."""
        pending: deque[asyncio.Future] = deque()
        source = iter(attempts)
        try:
            while True:
                for attempt in itertools.islice(source, window - len(pending)):
                    pending.append(asyncio.ensure_future(self._verdict(attempt)))
                if not pending:
                    return
                verdict = await pending.popleft()
                if verdict is not None:
                    yield verdict
        except RequestRejected as error:
            raise JudgeRunAborted(str(error)) from None
        except EndpointUnreachable as error:
            raise JudgeRunAborted(str(error), unreachable=True) from None
        finally:
            for task in pending:
                task.cancel()

    async def _verdict(self, attempt: Attempt) -> Verdict | None:
        try:
            verdict = await self._decide(attempt)
        except Deferred:
            self.stats.deferred += 1
            return None
        self.stats.done += 1
        if verdict.status == "unscored":
            self.stats.unscored += 1
        else:
            self.stats.decided[verdict.decided_by] += 1
        self.stats.conflicts += verdict.conflict
        if self._on_item_done:
            self._on_item_done(verdict, self.stats)
        return verdict

    async def _decide(self, attempt: Attempt) -> Verdict:
        degeneracy = detect_degenerate(attempt)
        if degeneracy is not None:
            verdict = Verdict(attempt=attempt, status="ok", first_wrong_step=degeneracy.step, category=DEGENERATE,
                              subtype=degeneracy.kind, explanation=degeneracy.detail, confidence=1.0,
                              judge_model="rules", taxonomy=self.taxonomy_label, config=self.fingerprint,
                              decided_by="rules")
            self.stats.degenerate += 1
        elif self.thinking.judges_thinking(attempt):
            verdict = await judge_thinking(self, attempt)
        elif self.config.checker != "off":
            verdict = await judge_checked(self, attempt, self.config.checker)
        else:
            self.stats.no_thinking += self.config.thinking.scope != "solution"
            verdict = await self.judge_solution(attempt)
        return verdict

    def solution_question(self, attempt: Attempt) -> Question:
        messages = {spec: build_messages(self.config.taxonomy, self.schema, attempt, system=self._systems[spec])
                    for spec in self.config.judges}
        check = partial(self.check_steps, len(attempt.steps))
        return Question(messages, self.schema, self._schema_sha, check)

    def check_steps(self, n_steps: int, raw: str | None, finish_reason: str | None) -> ParsedAnswer | Invalid:
        return validate_answer(raw, finish_reason, n_steps, self.config.taxonomy, self.validator)

    async def judge_solution(self, attempt: Attempt) -> Verdict:
        """The verdict on ``attempt``'s solution: every judge asked, then the majority."""
        question = self.solution_question(attempt)
        return self.combine(attempt, await self.ask_all(question))

    async def ask_all(self, question: Question) -> list[JudgeAnswer]:
        """Every judge's (and sample's) answer to ``question``."""
        return list(await asyncio.gather(*(self._answer(spec, sample, question) for spec, sample in self.asks)))

    def combine(self, attempt: Attempt, answers: Sequence[JudgeAnswer]) -> Verdict:
        common = dict(judge_model=self.config.judge_model, taxonomy=self.taxonomy_label, config=self.fingerprint)
        try:
            return combine_answers(attempt, answers, **common)
        except ValidationError as error:  # a value no record can hold: unscored, never a crash
            first = error.errors()[0]
            reason = f"invalid: {'.'.join(map(str, first['loc']))}: {first['msg']}"
            return Verdict(attempt=attempt, status="unscored", reason=reason, **common)

    async def _completion(self, spec: JudgeSpec, question: Question, messages: list[dict], params: dict,
                          round: int = 0, offline: bool = False) -> tuple[Completion, bool]:
        """The completion, and whether it was sent now (False: read from the cache)."""
        identity = spec.endpoint.cache_identity
        key = request_key(messages, identity, {**params, "retry_round": round} if round else params,
                          question.schema_sha)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            self.stats.usage_cached += Usage(prompt_tokens=cached.prompt_tokens,
                                             completion_tokens=cached.completion_tokens)
            return cached, False
        if offline:
            raise _Offline()
        async with self._slots:
            completion = await self.backends[identity].complete(messages, question.schema, params, self._count_retry)
        self.cache.put(key, identity, completion)
        self.stats.requests_sent += 1
        self.stats.usage_sent += Usage(prompt_tokens=completion.prompt_tokens,
                                       completion_tokens=completion.completion_tokens)
        return completion, True

    def _count_retry(self, _reason: str) -> None:
        self.stats.transport_retries += 1

    async def _answer(self, spec: JudgeSpec, sample: int, question: Question) -> JudgeAnswer:
        """This judge's answer: round 0, then (see the module's docstring) any later round in the
        cache, and one new round when ``retry_unscored`` and every earlier round was invalid."""
        label = spec.label if spec.samples == 1 else f"{spec.label}#{sample}"
        common = dict(judge=label, model=spec.endpoint.model, sample=sample)
        answer, tries, usage = None, 0, Usage()
        for round in itertools.count():
            try:
                asked, sent = await self._ask(question, spec, sample, round,
                                              offline=round > 0 and not self.retry_unscored)
            except _Offline:
                return answer
            tries, usage = tries + asked.tries, usage + asked.usage
            answer = asked.model_copy(update={**common, "tries": tries, "usage": usage})
            if answer.status == "ok" or sent or not (answer.reason or "").startswith("invalid:"):
                return answer
        raise AssertionError("unreachable")  # pragma: no cover

    async def _ask(self, question: Question, spec: JudgeSpec, sample: int, round: int,
                   offline: bool) -> tuple[JudgeAnswer, bool]:
        """One round: ask, and re-ask with the reason after each invalid answer; also whether anything
        was sent now. Raises :class:`_Offline` if ``offline`` and a request is not in the cache."""
        common = dict(judge="", model=spec.endpoint.model, sample=sample)
        params = spec.params(sample, round)
        usage, raw, reason, sent = Usage(), None, "no answer", False
        messages = question.messages[spec]
        for tries in range(1, self.config.max_invalid_retries + 2):
            try:
                completion, now = await self._completion(spec, question, messages, params, round, offline)
            except RequestRejected as error:
                if error.fatal:
                    raise
                return JudgeAnswer(status="unscored", reason=clean(f"rejected: {error}"), tries=tries, usage=usage,
                                   raw_response=raw, **common), True
            except TransportFailure as error:
                return JudgeAnswer(status="unscored", reason=clean(f"transport: {error}"), tries=tries,
                                   usage=usage, raw_response=raw, **common), True
            sent = sent or now
            usage += Usage(prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens)
            raw = completion.content
            answer = self._parsed(question, raw, completion.finish_reason, tries, usage, common)
            if isinstance(answer, JudgeAnswer):
                return answer, sent
            reason = answer.reason
            self.stats.invalid_answers += 1
            messages = question.reask(messages, raw, reason)
        return JudgeAnswer(status="unscored", reason=clean(f"invalid: {reason}"),
                           tries=self.config.max_invalid_retries + 1, usage=usage, raw_response=raw, **common), sent

    def _parsed(self, question: Question, raw: str | None, finish_reason: str | None, tries: int, usage: Usage,
                common: dict) -> JudgeAnswer | Invalid:
        """The scored answer in ``raw``, or why it is invalid (also when no record could hold it)."""
        parsed = question.check(raw, finish_reason)
        if isinstance(parsed, Invalid):
            return parsed
        try:
            return JudgeAnswer(status="ok", **{question.index_field: parsed.first_wrong_step}, category=parsed.category,
                               subtype=parsed.subtype, explanation=parsed.explanation, confidence=parsed.confidence,
                               raw_response=raw, tries=tries, usage=usage, **common)
        except ValidationError as error:
            first = error.errors()[0]
            return Invalid(f"schema: {'.'.join(map(str, first['loc']))}: {first['msg']}")

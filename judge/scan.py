"""Judging a reasoning model's thinking: windows asked in order, until the first one with an error.

Scope ``thinking``: the windows of the thinking (:mod:`quantmedic.judge.windows`) are asked one after
another, every judge and sample about each, each request cached on its own (a rerun resumes where it
stopped); the scan stops at the first window whose majority names a wrong section, which becomes the
verdict's ``first_wrong_section``; when no window does, it is -1 (category ``none``, with the lowest
of the windows' confidences). A window with no valid answer stops the scan: the item is unscored,
since the first error can no longer be placed. Scope ``both``: that scan, then the solution judged
as for scope ``solution``: ``first_wrong_step`` too, and the category and explanation are those of
the first error (the thinking's when it has one). An attempt without thinking is judged on its
solution (``scope`` ``solution`` in its verdict, counted in :attr:`RunStats.no_thinking`).

**The token cap.** ``max_tokens_per_item`` bounds an item's estimated tokens (each window's counted
prompt plus the answer's ``max_tokens``, for every judge and sample, re-asks aside): the windows past
it are never sent, and an item whose scan needs them is unscored (``over --max-tokens-per-item``),
saying which sections were found clean. The cap is not part of the verdict's configuration, so a
rerun with a higher one completes such items in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from quantmedic.taxonomy.model import NO_ERROR
from quantmedic.taxonomy.records import Attempt, JudgeAnswer, JudgeScope, Verdict

from .cache import schema_digest
from .ensemble import Majority, majority
from .question import Question
from .schema import thinking_output_schema
from .step_format import CHARS_PER_TOKEN
from .tokens import TokenCounter, estimating
from .validate import make_validator, validate_window_answer
from .window_prompt import (REASK_TOKENS, THINKING_PROMPT_VERSION, escaped_sections, frame_text, reask_messages,
                            thinking_system_message, window_user_message)
from .windows import Budget, NoRoom, Window, plan_windows

if TYPE_CHECKING:
    from .runner import JudgeConfig, JudgeRun

CHAT_TOKENS = 40
"""Tokens a chat template adds around four messages (role markers, separators)."""


@dataclass(frozen=True)
class ThinkingSettings:
    """What is judged, and the windows of a thinking (see the module's docstring)."""

    scope: JudgeScope = "solution"
    context_tokens: int = 4096
    context_share: float = 0.25
    margin_tokens: int = 64
    max_tokens_per_item: int | None = None
    counter: TokenCounter = field(default_factory=lambda: estimating(CHARS_PER_TOKEN))

    def fingerprint(self) -> dict:
        return {"scope": self.scope, "context_tokens": self.context_tokens, "context_share": self.context_share,
                "margin": self.margin_tokens, "counter": self.counter.label, "prompt": THINKING_PROMPT_VERSION}


@dataclass(frozen=True)
class PlannedWindow:
    window: Window
    messages: list[dict]
    prompt_tokens: int


class ThinkingPlanner:
    """The thinking prompt of a run, and each item's windows (planned once, before anything is sent)."""

    def __init__(self, config: JudgeConfig, answer_tokens: int | None = None):
        self.settings = config.thinking
        self.count = config.thinking.counter
        self.schema = thinking_output_schema(config.taxonomy)
        self.validator = make_validator(self.schema)
        self.schema_sha = schema_digest(self.schema)
        self.system = thinking_system_message(config.taxonomy, self.schema)
        self.answer_tokens = answer_tokens or max((j.max_tokens for j in config.judges), default=512)
        self.taxonomy = config.taxonomy
        self._system_tokens: int | None = None

    def judges_thinking(self, attempt: Attempt) -> bool:
        return self.settings.scope != "solution" and attempt.thinking is not None and bool(attempt.thinking.sections)

    def plan(self, attempt: Attempt) -> tuple[PlannedWindow, ...]:
        """The item's windows with their messages and counted prompt tokens; raises :class:`NoRoom`. Planned
        anew on each call (the estimate, then the scan) and never kept: memory stays bounded by the items in
        flight, not by every trace's windows."""
        if self._system_tokens is None:
            self._system_tokens = self.count(self.system)
        problem, reference = attempt.problem.text, attempt.problem.reference_answer
        fixed = (self._system_tokens + self.count(frame_text(problem, reference)) + self.answer_tokens
                 + REASK_TOKENS + CHAT_TOKENS + self.settings.margin_tokens)
        budget = Budget(self.settings.context_tokens, fixed, self.settings.context_share)
        texts = attempt.thinking.section_texts
        escaped = escaped_sections(texts)
        windows = plan_windows(escaped, budget, self.count)
        planned = []
        for window in windows:
            changed = any(escaped[s.index] != texts[s.index] for s in (*window.context, *window.judged))
            user = window_user_message(problem, reference, window, len(texts), len(windows), escaped=changed)
            planned.append(PlannedWindow(window, [{"role": "system", "content": self.system},
                                                  {"role": "user", "content": user}],
                                         self._system_tokens + self.count(user) + CHAT_TOKENS))
        return tuple(planned)

    def question(self, run: JudgeRun, planned: PlannedWindow) -> Question:
        window = planned.window
        check = partial(validate_window_answer, sections=range(window.first, window.last + 1),
                        taxonomy=self.taxonomy, validator=self.validator)
        return Question({spec: planned.messages for spec in run.config.judges}, self.schema, self.schema_sha,
                        check, "first_wrong_section",
                        partial(reask_messages, count=self.count))


def window_tokens(run: JudgeRun, planned: PlannedWindow) -> int:
    """A window's estimated tokens: its prompt and the answer's limit, for every judge and sample."""
    return sum(planned.prompt_tokens + spec.max_tokens for spec, _ in run.asks)


@dataclass(frozen=True)
class Scan:
    """The outcome of a thinking scan: the first wrong section (-1: none; None: unscored) and its vote."""

    answers: tuple[JudgeAnswer, ...]
    section: int | None = None
    vote: Majority | None = None
    reason: str | None = None
    confidence: float | None = None


def _section_vote(answers: list[JudgeAnswer]) -> Majority | None:
    """The majority over a window's answers, voting on the section they name."""
    return majority([a.model_copy(update={"first_wrong_step": a.first_wrong_section}) for a in answers])


async def scan_thinking(run: JudgeRun, attempt: Attempt) -> Scan:
    """Ask the windows in order until one's majority names a wrong section (the module's rules)."""
    try:
        plan = run.thinking.plan(attempt)
    except NoRoom as error:
        return Scan((), reason=f"no room: {error}")
    cap, spent, answers, confidences = run.config.thinking.max_tokens_per_item, 0, [], []
    for planned in plan:
        window = planned.window
        spent += window_tokens(run, planned)
        if cap is not None and spent > cap:
            run.stats.over_cap += 1
            clean = f"no error in sections 0 to {window.first - 1}; " if window.first else ""
            return Scan(tuple(answers), reason=f"over --max-tokens-per-item: {clean}windows {window.number + 1} to "
                                               f"{len(plan)} of {len(plan)} (sections {window.first} to "
                                               f"{plan[-1].window.last}) not judged (estimated {spent} > {cap} tokens)")
        asked = await run.ask_all(run.thinking.question(run, planned))
        run.stats.windows += 1
        answers += asked
        vote = _section_vote(asked)
        if vote is None:
            reasons = "; ".join(dict.fromkeys(a.reason or "" for a in asked))
            return Scan(tuple(answers), reason=f"window {window.number + 1} of {len(plan)} (sections {window.first} "
                                               f"to {window.last}): {reasons}")
        if vote.first_wrong_step != -1:
            return Scan(tuple(answers), vote.first_wrong_step, vote, confidence=vote.confidence)
        confidences.append(vote.confidence)
    return Scan(tuple(answers), -1, vote, confidence=min(confidences))


async def judge_thinking(run: JudgeRun, attempt: Attempt) -> Verdict:
    """The verdict of scope ``thinking`` or ``both`` on an attempt with thinking."""
    scan = await scan_thinking(run, attempt)
    scope = run.config.thinking.scope
    common = dict(attempt=attempt, judge_model=run.config.judge_model, taxonomy=run.taxonomy_label,
                  config=run.fingerprint, scope=scope)
    if scan.section is None:
        return Verdict(status="unscored", reason=f"thinking: {scan.reason}", judges=scan.answers, **common)
    n = len(attempt.thinking.sections)
    found = dict(first_wrong_section=scan.section, category=scan.vote.category, subtype=scan.vote.subtype,
                 explanation=scan.vote.explanation, confidence=scan.confidence, raw_response=scan.vote.raw_response,
                 agreement=scan.vote.agreement)
    if scan.section == -1:
        found.update(category=NO_ERROR, subtype=NO_ERROR, explanation=f"No error found in the thinking's {n} "
                     f"sections (0 to {n - 1}).")
    if scope == "thinking":
        return Verdict(status="ok", judges=scan.answers, **found, **common)
    solution = await run.judge_solution(attempt)
    judges = (*scan.answers, *solution.judges)
    if solution.status != "ok":
        return Verdict(status="unscored", judges=judges, reason=f"solution: {solution.reason} (the thinking's "
                       f"first wrong section: {scan.section})", **common)
    if scan.section == -1:  # the first error, if any, is the solution's
        found.update(category=solution.category, subtype=solution.subtype, explanation=solution.explanation,
                     confidence=solution.confidence, raw_response=solution.raw_response,
                     agreement=solution.agreement)
    return Verdict(status="ok", first_wrong_step=solution.first_wrong_step, judges=judges, **found, **common)


@dataclass(frozen=True)
class Estimate:
    """What a run may send at most, before anything is sent (every window, no re-asks, nothing cached)."""

    items: int = 0
    windows: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    over_cap: int = 0
    no_room: int = 0

    def line(self, price_input: float | None, price_output: float | None) -> str:
        """One line: the tokens, and their cost when priced."""
        if price_input is None and price_output is None:
            cost = "not priced (--price-input/--price-output)"
        else:
            dollars = (self.prompt_tokens * (price_input or 0) + self.completion_tokens * (price_output or 0)) / 1e6
            cost = f"at most {dollars:.4f} USD"
        notes = [f"{self.over_cap} items stop at --max-tokens-per-item"] if self.over_cap else []
        notes += [f"{self.no_room} items do not fit the context"] if self.no_room else []
        return (f"estimate before sending (worst case: every window, no re-asks, nothing cached): {self.items} items, "
                f"{self.windows} windows of thinking, {self.prompt_tokens} prompt + {self.completion_tokens} "
                f"completion tokens; {cost}" + "".join(f"; {n}" for n in notes))


def estimate(run: JudgeRun, attempts: list[Attempt], degenerate: set[str]) -> Estimate:
    """The :class:`Estimate` of judging ``attempts`` (those whose ids are in ``degenerate`` cost nothing)."""
    items = windows = prompt = completion = over = no_room = 0
    cap = run.config.thinking.max_tokens_per_item
    for attempt in attempts:
        if attempt.id in degenerate:
            continue
        items += 1
        if run.thinking.judges_thinking(attempt):
            try:
                plan = run.thinking.plan(attempt)
            except NoRoom:
                no_room += 1
                continue
            spent = 0
            for planned in plan:
                spent += window_tokens(run, planned)
                if cap is not None and spent > cap:
                    over += 1
                    break
                windows += 1
                prompt += planned.prompt_tokens * len(run.asks)
                completion += sum(spec.max_tokens for spec, _ in run.asks)
            if run.config.thinking.scope == "thinking":
                continue
        question = run.solution_question(attempt)
        for spec, _ in run.asks:
            prompt += sum(run.thinking.count(m["content"]) for m in question.messages[spec]) + CHAT_TOKENS
            completion += spec.max_tokens
    return Estimate(items, windows, prompt, completion, over, no_room)

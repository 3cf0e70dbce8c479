"""Deterministic detection of degenerate outputs, before any judge call and with no LLM spend.

Three kinds, checked in this order (the first that applies wins):

* ``truncated`` first for a reasoning model whose thinking never ended (no solution was written, so
  there is nothing else to check; see :attr:`~quantmedic.taxonomy.records.Attempt.truncated_thinking`);
* ``repetition_loop``: the output ends in a loop: the same step (whitespace-normalised, at least
  8 characters) three or more times in a row, or its last words repeat with a period of 1–64
  words over at least 40 words and 4 periods;
* ``truncated``: the generator stopped at its token limit (``finish_reason == "length"``);
* ``no_final_answer``: no ``\\boxed{}``, ``####``, ``A:`` or "the answer is" statement, and the
  last step has no digit or math in it either (a prose answer such as "so 35 students like games"
  counts as an answer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from quantmedic.taxonomy.records import Attempt

from .answers import extract_final_answer

_MATHY = re.compile(r"[0-9]|\\[a-zA-Z]+|\$")

REPETITION_LOOP = "repetition_loop"
TRUNCATED = "truncated"
NO_FINAL_ANSWER = "no_final_answer"
DEGENERATE_SUBTYPES = (REPETITION_LOOP, TRUNCATED, NO_FINAL_ANSWER)


@dataclass(frozen=True)
class Degeneracy:
    """Why an attempt is degenerate, and the step where the degeneration starts (if known)."""

    kind: str
    step: int | None
    detail: str


def _norm(step: str) -> str:
    return " ".join(step.split()).lower()


def _repeated_steps(steps: tuple[str, ...], min_run: int = 3) -> int | None:
    """Index of the first step of a run of ``min_run`` identical steps, if any."""
    run_start = 0
    for i in range(1, len(steps) + 1):
        if i < len(steps) and _norm(steps[i]) == _norm(steps[run_start]) and len(_norm(steps[i])) >= 8:
            continue
        if i - run_start >= min_run:
            return run_start
        run_start = i
    return None


def _periodic_tail(words: list[str], max_period: int = 64, min_span: int = 40, min_periods: int = 4) -> int | None:
    """Length of the periodic word tail, if the text ends in a loop."""
    n = len(words)
    for period in range(1, min(max_period, n // min_periods) + 1):
        span = period
        while span < n and words[n - 1 - span] == words[n - 1 - span + period]:
            span += 1
        if span >= max(min_span, min_periods * period):
            return span
    return None


def _step_of_word(steps: tuple[str, ...], word_index: int) -> int:
    seen = 0
    for i, step in enumerate(steps):
        seen += len(step.split())
        if word_index < seen:
            return i
    return len(steps) - 1


def detect_degenerate(attempt: Attempt) -> Degeneracy | None:
    """The attempt's degeneracy, or None when it is a normal output worth judging."""
    if attempt.truncated_thinking:
        return Degeneracy(TRUNCATED, len(attempt.steps) - 1, "the thinking never ended: no solution was written "
                                                              "(cut at the token limit)")
    start = _repeated_steps(attempt.steps)
    if start is not None:
        return Degeneracy(REPETITION_LOOP, start, f"step {start} repeats verbatim")
    words = attempt.solution_text.split()
    span = _periodic_tail(words)
    if span is not None:
        step = _step_of_word(attempt.steps, len(words) - span)
        return Degeneracy(REPETITION_LOOP, step, f"the last {span} words loop")
    if attempt.finish_reason == "length":
        return Degeneracy(TRUNCATED, len(attempt.steps) - 1, "generation stopped at the token limit")
    if (attempt.final_answer is None and extract_final_answer(attempt.solution_text) is None
            and not _MATHY.search(attempt.steps[-1])):
        return Degeneracy(NO_FINAL_ANSWER, None, "the solution states no final answer")
    return None

"""Grading attempts: final-answer extraction, then math-verify (``parse`` + ``verify``) in worker
processes with a per-item timeout (:mod:`quantmedic.pipelines.evaluation.pool`).

math-verify's own timeouts use ``signal.alarm`` (main thread only) and turn a timeout into a silent
``False``; here they are off and the parent enforces the limit instead: a worker still busy when an
item's time is up is killed and replaced, and that attempt is recorded as ``ungradable: timeout``.
A worker that dies records ``ungradable: worker crashed (...)``; an exception records
``ungradable: <Type>: <message>``. Nothing stops the run. ``correct`` is None exactly when the
grading note starts with ``ungradable``.

Extraction: ``\\boxed{}``, GSM8K's ``####`` and ``A:`` lines and "the answer is" sentences
(:mod:`quantmedic.judge.answers`); with none of them, math-verify's own search for the last
expression (noted as such). Multiple-choice problems (``Problem.choices``) are graded by the choice
letter, which may also be given as the text of an option.

A reasoning model's answer is read from its solution (the steps after the thinking), never from inside the
thinking; an attempt whose thinking never ended has no solution and is graded wrong, ``no final answer: the
thinking never ended``, whatever the thinking says.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from quantmedic.judge.adapters import load_attempts
from quantmedic.judge.answers import extract_final_answer, last_boxed
from quantmedic.taxonomy.jsonl import read_records, write_records
from quantmedic.taxonomy.records import Attempt

from quantmedic.pipelines.data import shipped_path
from quantmedic.pipelines.evaluation.benchmarks import LETTERS
from quantmedic.pipelines.evaluation.grade_summary import (Agreement, Disagreement, GradingSummary,  # noqa: F401
                                                         UNGRADABLE, agreement, agreement_of, attempt_label,
                                                         summarize)
from quantmedic.pipelines.evaluation.pool import Failure, iter_pool, run_pool

MATH_VERIFY = "math-verify"
LAST_EXPRESSION = "math-verify (no stated answer: last expression)"
STRING_MATCH = "string match (reference not parseable)"
CHOICE = "choice letter"
NO_ANSWER = "no final answer"
THINKING_NEVER_ENDED = f"{NO_ANSWER}: the thinking never ended"
TIMEOUT = "ungradable: timeout"
NO_REFERENCE = "ungradable: no reference answer"


@dataclass(frozen=True)
class GradeItem:
    """What a worker needs to grade one attempt (small and picklable)."""

    solution: str
    reference: str | None
    choices: tuple[str, ...] | None = None
    no_solution: bool = False  # a reasoning model's thinking never ended: nothing to grade


@dataclass(frozen=True)
class Grade:
    """The outcome for one attempt: ``correct`` is None when it could not be graded."""

    correct: bool | None
    final_answer: str | None
    grading: str


Check = Callable[[GradeItem], Grade]

# --- extraction -------------------------------------------------------------------------------------

_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textrm)\s*\{([^{}]*)\}")
_LEADING_LETTER = re.compile(r"^\(?([A-Z])\)?(?:$|[\s.:)\]])")
_ANSWER_LETTER = re.compile(r"\b(?i:answer)\b(?:\s+is)?\s*[:=]?\s*(?i:option|choice)?\s*[*$\\{(\[]*\s*"
                            r"(?:\\text(?:bf)?\{)?\(?([A-Z])\)?(?![A-Za-z0-9])")
_ANSWER_LINE = re.compile(r"\b(?i:answer)\b\s*(?:is\s*:?|:)\s*(.+?)\s*$", re.MULTILINE)


def _clean(answer: str) -> str:
    r"""An extracted answer without math delimiters, bold markers, text wrappers or a trailing period.

    >>> _clean(r"$\textbf{(C)}$.")
    '(C)'
    """
    text = answer.strip()
    for _ in range(3):
        text = _WRAPPERS.sub(r"\1", text)
    previous = None
    while text != previous:
        previous = text
        text = text.strip().rstrip(".").strip("*").strip()
        if len(text) >= 2 and text[0] == "$" and text[-1] == "$":
            text = text[1:-1]
    return text


def _same_text(a: str, b: str) -> bool:
    return " ".join(_clean(a).split()).lower() == " ".join(_clean(b).split()).lower()


def letter_of(answer: str, choices: Sequence[str]) -> str | None:
    """The choice letter an extracted answer names: a letter (``C``, ``(C)``, ``C) 42``) or an option's text.

    >>> letter_of("(B) 4", ["3", "4"]), letter_of("$4$", ["3", "4"]), letter_of("5", ["3", "4"])
    ('B', 'B', None)
    """
    text = _clean(answer)
    match = _LEADING_LETTER.match(text)
    if match and LETTERS.index(match.group(1)) < len(choices):
        return match.group(1)
    for i, option in enumerate(choices):
        if _same_text(text, option):
            return LETTERS[i]
    return None


def extract_choice(text: str, choices: Sequence[str]) -> str | None:
    r"""The choice letter a multiple-choice solution ends with, or None.

    Tried in order, the last match of each winning: ``\boxed{}``, an "answer is (C)" / "Answer: C"
    statement, an "answer: <text of an option>" line, then the other final-answer conventions.

    >>> extract_choice(r"so it is \boxed{\text{(C)}}", ["1", "2", "3", "4"])
    'C'
    >>> extract_choice("Therefore, the answer is (B).", ["1", "2", "3", "4"])
    'B'
    >>> extract_choice("Answer: 3", ["1", "2", "3", "4"])
    'C'
    """
    boxed = last_boxed(text)
    if boxed and (letter := letter_of(boxed, choices)):
        return letter
    for match in reversed(list(_ANSWER_LETTER.finditer(text))):
        if LETTERS.index(match.group(1)) < len(choices):
            return match.group(1)
    stated = [*_ANSWER_LINE.findall(text)[-1:], extract_final_answer(text)]
    return next((letter for s in stated if s and (letter := letter_of(s, choices))), None)


# --- checking (runs in the workers) -----------------------------------------------------------------

def _parse(text: str) -> list:
    from math_verify import parse

    return parse(text, parsing_timeout=None)  # the pool enforces the time limit


def _has_math(parsed: list) -> bool:
    return any(not isinstance(p, str) for p in parsed)


def _parse_answer(answer: str) -> list:
    """math-verify's parse of an extracted answer: as a boxed LaTeX answer, else as plain text."""
    boxed = _parse("\\boxed{" + answer + "}")
    if _has_math(boxed):
        return boxed
    plain = _parse(answer)
    return plain if _has_math(plain) else boxed


def grade_item(item: GradeItem) -> Grade:
    r"""Grade one solution against its reference answer (no time limit: the pool adds one).

    >>> grade_item(GradeItem("2 + 2 = 4\nA: 4", "4"))
    Grade(correct=True, final_answer='4', grading='math-verify')
    >>> grade_item(GradeItem(r"so $x = \boxed{0.5}$", r"\frac{1}{2}")).correct
    True
    >>> grade_item(GradeItem("I pick \\boxed{B}", "A", ("yes", "no")))
    Grade(correct=False, final_answer='B', grading='choice letter')
    """
    from math_verify import verify

    if item.no_solution:
        return Grade(False, None, THINKING_NEVER_ENDED)
    if not item.reference or not item.reference.strip():
        return Grade(None, extract_final_answer(item.solution), NO_REFERENCE)
    if item.choices:
        letter = extract_choice(item.solution, item.choices)
        if letter is None:
            return Grade(False, None, NO_ANSWER)
        return Grade(letter == item.reference.strip().upper(), letter, CHOICE)
    stated = extract_final_answer(item.solution)
    answer = _clean(stated) if stated else None
    gold = _parse_answer(_clean(item.reference))
    if not gold:
        if answer is None:
            return Grade(False, None, NO_ANSWER)
        return Grade(_same_text(answer, item.reference), answer, STRING_MATCH)
    if answer:
        predicted, how = _parse_answer(answer), MATH_VERIFY
    else:
        predicted, how = _parse(item.solution), LAST_EXPRESSION
        if not predicted:
            return Grade(False, None, NO_ANSWER)
        answer = str(predicted[-1])
    if not predicted:
        return Grade(False, answer, MATH_VERIFY)
    return Grade(bool(verify(gold, predicted, timeout_seconds=None, raise_on_error=True)), answer, how)


def grade_item_of(attempt: Attempt) -> GradeItem:
    """The grading input of an attempt: its solution's text (after any thinking) and its problem's reference."""
    return GradeItem(attempt.solution_text, attempt.problem.reference_answer, attempt.problem.choices,
                     no_solution=attempt.truncated_thinking)


# --- in the process pool ------------------------------------------------------------------------------

def _prepare_worker() -> None:
    """Run in each worker before its first item: pay math-verify's import before the first item's clock
    starts, and silence its "timeout disabled" warnings (the pool enforces the limit)."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import math_verify  # noqa: F401


def _ungradable(item: GradeItem, failure: Failure) -> Grade:
    """The grade of an attempt whose check timed out, crashed its worker or raised."""
    return Grade(None, None, f"{UNGRADABLE}: {failure.reason}"[:300])


def grade_items(items: Sequence[GradeItem], *, workers: int = 2, timeout: float = 5.0, check: Check = grade_item,
                progress: Callable[[int, int], None] | None = None,
                on_grade: Callable[[int, Grade], None] | None = None) -> list[Grade]:
    """Grade ``items`` in ``workers`` processes, each item within ``timeout`` seconds; results in order.

    ``check`` must be a module-level function (it is sent to the worker processes); an item it does
    not finish is ``ungradable: timeout``, ``ungradable: worker crashed (exit code N)`` or
    ``ungradable: <Type>: <message>``. ``progress`` is called as ``progress(done, total)``, ``on_grade(index,
    grade)`` as each grade comes.
    """
    return run_pool(check, items, on_failure=_ungradable, workers=workers, timeout=timeout, setup=_prepare_worker,
                    preload=(__name__, "math_verify"), progress=progress, on_result=on_grade)


def grade_attempts(attempts: Sequence[Attempt], *, workers: int = 2, timeout: float = 5.0,
                   progress: Callable[[int, int], None] | None = None, check: Check = grade_item,
                   on_graded: Callable[[int, Attempt], None] | None = None) -> list[Attempt]:
    """The attempts with ``correct``, ``final_answer`` and ``grading`` set by :func:`grade_items`.

    An ungradable attempt gets the answer its text states, if any (else keeps the one it came
    with). ``check`` is for tests and other graders: a module-level function ``GradeItem -> Grade``.
    ``on_graded(index, attempt)`` is called with each graded attempt as it comes (to save it at once).
    """
    graded: list = [None] * len(attempts)
    with closing(iter_graded(attempts, workers=min(workers, len(attempts) or workers), timeout=timeout,
                             check=check)) as results:
        for done, (i, attempt) in enumerate(results, start=1):
            graded[i] = attempt
            if on_graded is not None:
                on_graded(i, attempt)
            if progress is not None:
                progress(done, len(attempts))
    return graded


def iter_graded(attempts: Iterable[Attempt], *, workers: int = 2, timeout: float = 5.0,
                check: Check = grade_item) -> Iterator[tuple[int, Attempt]]:
    """``(index, graded attempt)`` in the order they finish, as :func:`grade_attempts` grades them, reading
    ``attempts`` (any iterable) only as the workers have room: only the attempts in flight are held."""
    flight: dict[int, tuple[Attempt, GradeItem]] = {}

    def items() -> Iterator[GradeItem]:
        for i, attempt in enumerate(attempts):
            flight[i] = (attempt, grade_item_of(attempt))
            yield flight[i][1]

    def graded(i: int, g: Grade) -> Attempt:
        a, item = flight.pop(i)
        return a.model_copy(update={"correct": g.correct, "grading": g.grading, "final_answer": g.final_answer
                                    or (_stated(item) if g.correct is None else None) or a.final_answer})

    grades = iter_pool(check, items(), on_failure=_ungradable, workers=workers, timeout=timeout,
                       setup=_prepare_worker, preload=(__name__, "math_verify"))
    return ((i, graded(i, g)) for i, g in grades)


def _stated(item: GradeItem) -> str | None:
    """The answer a solution states (regular expressions only: safe in the parent process)."""
    if item.no_solution:
        return None
    if item.choices:
        return extract_choice(item.solution, item.choices)
    stated = extract_final_answer(item.solution)
    return _clean(stated) if stated else None


# --- the agreement check ------------------------------------------------------------------------------

def check_gsm8k(*, workers: int = 2, timeout: float = 5.0, limit: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> Agreement:
    """Grade the shipped GSM8K model solutions and compare with their authors' ``is_correct`` labels."""
    labelled = load_attempts(shipped_path("gsm8k-solutions"))[:limit]
    return agreement(labelled, grade_attempts(labelled, workers=workers, timeout=timeout, progress=progress))


# --- files ------------------------------------------------------------------------------------------

def grade_file(path: Path, console: Console | None = None) -> None:
    """Grade the attempts of ``path`` that are not graded yet, and rewrite it atomically."""
    attempts = read_records(path, Attempt)
    todo = [i for i, a in enumerate(attempts) if a.grading is None]
    if not todo:
        return
    graded = grade_attempts([attempts[i] for i in todo])
    for i, attempt in zip(todo, graded):
        attempts[i] = attempt
    write_records(path, attempts)
    if console is not None:
        right = sum(a.correct is True for a in attempts)
        console.print(f"graded {len(todo)} attempts: {right} of {len(attempts)} correct in {path}", highlight=False)

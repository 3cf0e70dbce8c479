"""Preference pairs from diagnosed failures: rejected = the failed attempt, chosen = a correct solution.

The chosen solution comes from the first source in ``order`` that has one:

* ``full-precision``: a correct attempt at the same problem by an unquantized model other than the
  failed attempt's (the full-precision model of the study);
* ``resample``: a correct attempt by the same model and quantization as the failed one (another sample);
* ``reference``: the problem's reference solution rewritten into the step format.

Both solutions are written in the generation format (``Step i:`` paragraphs); steps that already
carry the marker are kept as they are. A ``step`` pair needs a chosen solution whose first steps are
the rejected one's up to the first wrong step: the two share that prefix and differ from there
(DPO's log-ratios cancel on the shared tokens, so the pair teaches only the continuation).

A failed attempt with thinking (a reasoning model's) makes a ``trace`` pair: the prompt is the
reasoning prompt (:func:`~quantmedic.judge.step_format.reasoning_messages`), and both turns are whole
traces (:func:`~quantmedic.judge.step_format.trace_text`). Its chosen side must have thinking that
ended: a chosen side without thinking (an attempt without it, or the reference solution) would teach
the model to stop thinking, so it is refused (counted) unless ``allow_chosen_without_thinking``; a
truncated trace is never chosen. Trace pairs are never step-level (counted).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from quantmedic.judge.adapters import strip_calculator_notes
from quantmedic.judge.answers import last_boxed
from quantmedic.judge.segment import split_steps
from quantmedic.judge.step_format import reasoning_messages, step_messages, trace_text
from quantmedic.taxonomy.records import Attempt, ChosenSource, Message, PreferencePair, Problem

from .diagnoses import Diagnosis

CHOSEN_SOURCES: tuple[str, ...] = ("full-precision", "resample", "reference")
_MARKER = re.compile(r"^\s*(?:#{1,6}\s*)?(?:\*\*)?\s*step\s*\d+\s*[:.]", re.IGNORECASE)
_GSM8K_FINAL = re.compile(r"^\s*####\s*(.+?)\s*$", re.MULTILINE)
_SPACE = re.compile(r"\s+")


def step_text(steps: Sequence[str]) -> str:
    """Steps as the generation format writes them: ``Step i:`` paragraphs separated by a blank line.

    >>> step_text(["2+2=4", "so \\\\boxed{4}"])
    'Step 1: 2+2=4\\n\\nStep 2: so \\\\boxed{4}'
    >>> step_text(["Step 1: x", "Step 2: y"])
    'Step 1: x\\n\\nStep 2: y'
    """
    return "\n\n".join(s if _MARKER.match(s) else f"Step {i}: {s}" for i, s in enumerate(steps, 1))


def reference_steps(problem: Problem) -> list[str] | None:
    """The reference solution as steps ending in a boxed answer (GSM8K's ``#### N`` becomes the box).

    >>> reference_steps(Problem(text="q", reference_solution="16-3=<<16-3=13>>13 eggs\\n#### 13"))
    ['16-3=13 eggs', 'The answer is $\\\\boxed{13}$.']
    """
    text = problem.reference_solution
    if not text or not text.strip():
        return None
    text = strip_calculator_notes(text)
    final = _GSM8K_FINAL.search(text)
    answer = final.group(1) if final else problem.reference_answer
    text = _GSM8K_FINAL.sub("", text).strip()
    steps = split_steps(text) if text else []
    if last_boxed(text) is None:
        if answer is None:
            return None
        steps.append(f"The answer is $\\boxed{{{answer}}}$.")
    return steps or None


def _same_step(a: str, b: str) -> bool:
    strip = lambda s: _SPACE.sub(" ", _MARKER.sub("", s)).strip()
    return strip(a) == strip(b)


def shares_prefix(candidate: Sequence[str], rejected: Sequence[str], k: int) -> bool:
    """Whether ``candidate``'s first ``k`` steps are ``rejected``'s (ignoring step markers and spacing)."""
    return len(candidate) > k and all(_same_step(a, b) for a, b in zip(candidate[:k], rejected[:k]))


def _quantization_label(attempt: Attempt) -> str | None:
    """e.g. ``gptq-w4-g128``; a quantized KV cache counts too (``kv-int3``); None for full precision."""
    q = attempt.quantization
    if q is None:
        return None
    parts = [] if q.method == "none" else [q.method, f"w{q.bits}" if q.bits else None,
                                          f"g{q.group_size}" if q.group_size else None]
    if q.kv_cache_dtype and q.kv_cache_dtype not in ("auto", "none"):
        parts.append(f"kv-{q.kv_cache_dtype}")
    return "-".join(str(x) for x in parts if x) or None


def _is_full_precision(attempt: Attempt) -> bool:
    return _quantization_label(attempt) is None


@dataclass(frozen=True)
class Candidate:
    """A correct solution that could be the chosen side."""

    source: ChosenSource
    steps: tuple[str, ...]
    attempt: Attempt | None = None


def candidates(diagnosis: Diagnosis, correct_by_problem: dict[str, list[Attempt]],
               order: Sequence[str]) -> list[Candidate]:
    """The correct solutions for the diagnosis's problem, in the order of preference."""
    rejected = diagnosis.attempt
    same_side = lambda a: a.model == rejected.model and a.quantization == rejected.quantization
    found: list[Candidate] = []
    pool = sorted(correct_by_problem.get(rejected.problem.id, ()), key=lambda a: (a.sampling.sample_index, a.id))
    for source in order:
        if source == "full-precision":
            found += [Candidate("full-precision", a.steps, a) for a in pool if _is_full_precision(a) and not same_side(a)]
        elif source == "resample":
            found += [Candidate("resample", a.steps, a) for a in pool if same_side(a) and a.id != rejected.id]
        elif source == "reference":
            steps = reference_steps(rejected.problem)
            if steps:
                found.append(Candidate("reference", tuple(steps)))
        else:
            raise ValueError(f"unknown chosen source {source!r}; choose from {', '.join(CHOSEN_SOURCES)}")
    return found


def _lineage(diagnosis: Diagnosis, candidate: Candidate) -> dict:
    """The pair's fields that say where it comes from."""
    rejected, verdict = diagnosis.attempt, diagnosis.verdict
    problem = rejected.problem
    return dict(
        problem_id=problem.id, problem_source=problem.source, problem_source_id=problem.source_id,
        category=diagnosis.category, subtype=diagnosis.subtype, first_wrong_step=diagnosis.first_wrong_step,
        first_wrong_section=diagnosis.first_wrong_section,
        diagnosis_source=diagnosis.source, verdict_id=verdict.id, judge_model=verdict.judge_model,
        review_ids=diagnosis.review_ids, rejected_attempt_id=rejected.id, rejected_model=rejected.model,
        rejected_quantization=_quantization_label(rejected), chosen_source=candidate.source,
        chosen_attempt_id=candidate.attempt.id if candidate.attempt else None,
        chosen_model=candidate.attempt.model if candidate.attempt else None)


def make_pair(diagnosis: Diagnosis, candidate: Candidate, *, step: bool) -> PreferencePair:
    """A solution (or, with ``step``, step-level) pair in the generation format."""
    rejected = diagnosis.attempt
    prompt = tuple(Message(**m) for m in step_messages(rejected.problem))
    k = diagnosis.first_wrong_step
    chosen_steps = rejected.steps[:k] + candidate.steps[k:] if step else candidate.steps  # the exact same prefix
    return PreferencePair(
        prompt=prompt,
        chosen=(Message(role="assistant", content=step_text(chosen_steps)),),
        rejected=(Message(role="assistant", content=step_text(rejected.steps)),),
        kind="step" if step else "solution", shared_prefix_steps=k if step else None, **_lineage(diagnosis, candidate))


def make_trace_pair(diagnosis: Diagnosis, candidate: Candidate) -> PreferencePair:
    """A trace pair: the reasoning prompt, the failed trace rejected, the candidate's trace chosen."""
    rejected = diagnosis.attempt
    chosen_attempt = candidate.attempt
    thinking = chosen_attempt.thinking if chosen_attempt else None
    chosen = trace_text(chosen_attempt) if chosen_attempt else step_text(candidate.steps)
    estimated = rejected.thinking.tokens_estimated or (thinking is not None and thinking.tokens_estimated)
    return PreferencePair(
        prompt=tuple(Message(**m) for m in reasoning_messages(rejected.problem)),
        chosen=(Message(role="assistant", content=chosen),),
        rejected=(Message(role="assistant", content=trace_text(rejected)),),
        kind="trace", rejected_thinking_chars=rejected.thinking.chars, rejected_thinking_tokens=rejected.thinking.tokens,
        chosen_thinking_chars=thinking.chars if thinking else None,
        chosen_thinking_tokens=thinking.tokens if thinking else None, thinking_tokens_estimated=estimated,
        **_lineage(diagnosis, candidate))


def _has_thinking(candidate: Candidate) -> bool:
    return candidate.attempt is not None and candidate.attempt.thinking is not None


def _trace_pair(diagnosis: Diagnosis, found: list[Candidate], *, allow_without_thinking: bool,
                step_level: bool, notes: Counter) -> PreferencePair | None:
    """The trace pair of a diagnosis with thinking, or None (``notes`` says why)."""
    if step_level:
        notes["no step-level pair: judged over the thinking only" if diagnosis.first_wrong_step is None
              else "no step-level pair for a trace"] += 1
    traces = [c for c in found if _has_thinking(c) and c.attempt.thinking.closed]
    if traces:
        return make_trace_pair(diagnosis, traces[0])
    without = [c for c in found if not _has_thinking(c)]
    if without and allow_without_thinking:
        notes["trace pair with a chosen side without thinking (allowed)"] += 1
        return make_trace_pair(diagnosis, without[0])
    if without:
        notes["chosen without thinking refused for a trace"] += 1
    else:
        notes["only truncated traces to choose (never chosen)" if found else "no correct solution to choose"] += 1
    return None


def build_pairs(diagnoses: Iterable[Diagnosis], attempts: Iterable[Attempt], *,
                order: Sequence[str] = CHOSEN_SOURCES, step_level: bool = False,
                allow_chosen_without_thinking: bool = False) -> tuple[list[PreferencePair], Counter]:
    """One pair per diagnosis that has a correct solution; the Counter says why the others have none.

    With ``step_level``, a diagnosis whose candidates share no prefix with the failed attempt gets a
    whole-solution pair instead (counted as ``step pair fell back to solution``). A diagnosis whose
    attempt has thinking gets a trace pair (see the module's docstring).
    """
    correct: dict[str, list[Attempt]] = defaultdict(list)
    for attempt in attempts:
        if attempt.correct is True:
            correct[attempt.problem.id].append(attempt)
    pairs: list[PreferencePair] = []
    notes: Counter = Counter()
    for diagnosis in diagnoses:
        found = candidates(diagnosis, correct, order)
        if diagnosis.attempt.thinking is not None:
            pair = _trace_pair(diagnosis, found, allow_without_thinking=allow_chosen_without_thinking,
                               step_level=step_level, notes=notes)
            pairs += [pair] if pair else []
            continue
        if not found:
            notes["no correct solution to choose"] += 1
            continue
        k = diagnosis.first_wrong_step
        if k is None or k >= len(diagnosis.attempt.steps):
            notes["first wrong step past the last step" if k is not None
                  else "no first wrong step (thinking judged, but the attempt has none)"] += 1
            continue
        if step_level:
            sharing = [c for c in found if shares_prefix(c.steps, diagnosis.attempt.steps, k)]
            if sharing:
                pairs.append(make_pair(diagnosis, sharing[0], step=True))
                continue
            notes["step pair fell back to solution"] += 1
        pairs.append(make_pair(diagnosis, found[0], step=False))
    return pairs, notes

"""Length statistics of reasoning models' attempts, as *Quantization Hurts Reasoning?* (arXiv 2504.04823)
reports them beside accuracy: tokens of thinking and of solution, sections per trace, the share of
traces cut before ``</think>``, and reflections per 1,000 thinking tokens; for all attempts and
split by outcome (the study finds wrong answers longer).

Rules, once:

* **Thinking tokens**: ``thinking.tokens`` (counted, or estimated from the characters when
  ``thinking.tokens_estimated``; an attempt without a count gets :func:`estimate_tokens`).
* **Solution tokens**: ``solution_tokens`` when counted; else, for an attempt without thinking,
  ``completion_tokens``; else estimated from the solution's characters. A truncated trace wrote no
  solution and is left out of the solution statistics. Attempts without thinking count for
  solution tokens only.
* **Intervals**: the mean's 95% Student-t interval (:func:`t_quantile`: exact, no resampling, so no
  seed); the truncated share's 95% Wilson interval.
* **Reflections**: :func:`count_reflections` (the rule is in its docstring); per trace, reflections
  per 1,000 of its thinking tokens.

A summary is built from any iterable of attempts in one pass, keeping a few numbers per attempt and
none of its text.
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from statistics import NormalDist, fmean, median, stdev
from typing import Any, NamedTuple

from quantmedic.judge.metrics import Interval, wilson_interval
from quantmedic.judge.step_format import estimate_tokens
from quantmedic.taxonomy.records import Attempt

CONFIDENCE = 0.95

REFLECTION_MARKERS = (
    "wait", "hmm", "alternatively", "let me check", "let me verify", "let me double-check", "let me recheck",
    "let me re-check", "let me confirm", "let me reconsider", "let me re-examine", "let me re-evaluate",
    "let me think again", "double-check", "on second thought",
)
"""The phrases that mark a reflection: the model stopping to doubt, check or try another way."""


def _marker_pattern(markers: Sequence[str]) -> re.Pattern[str]:
    alternatives = sorted(markers, key=len, reverse=True)  # the longest first: one match per reflection
    parts = ["hm{2,}" if m == "hmm" else re.escape(m).replace(r"\ ", r"\s+") for m in alternatives]
    return re.compile(r"(?<![\w'-])(?:" + "|".join(parts) + r")(?![\w'-])", re.IGNORECASE)


_REFLECTION = _marker_pattern(REFLECTION_MARKERS)


def count_reflections(text: str) -> int:
    """How many :data:`REFLECTION_MARKERS` occur in ``text``, anywhere in it, by this rule: case
    ignored; a marker counts only as whole words (no letter, digit, hyphen or apostrophe touching
    either end); its words may be split by any whitespace; ``hmm`` also matches ``hmmm`` (two or more m); each
    character belongs to at most one marker, the longest (``Let me double-check`` is one, not two).

    >>> count_reflections("Wait, that's wrong. Hmmm. Let me double-check: 2 + 2 = 4.")
    3
    >>> count_reflections("But wait\\n\\nAlternatively, let me\\n  verify it. Waiting is awaited.")
    3
    >>> count_reflections("I checked it; let me compute 2 + 2 = 4. Hm.")
    0
    """
    return sum(1 for _ in _REFLECTION.finditer(text))


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided Student-t critical value: ``P(|T| <= t) = confidence`` for ``df`` degrees of freedom.

    Exact (bisection on the closed-form distribution, Abramowitz & Stegun 26.7.3-4) up to 200 degrees
    of freedom, the Cornish-Fisher expansion (26.7.5, error below 1e-9) above.

    >>> round(t_quantile(0.95, 1), 3), round(t_quantile(0.95, 10), 3), round(t_quantile(0.95, 1000), 3)
    (12.706, 2.228, 1.962)
    """
    if df < 1 or not 0 < confidence < 1:
        raise ValueError(f"need df >= 1 and 0 < confidence < 1, got {df}, {confidence}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    if df > 200:
        g = ((z ** 3 + z) / 4, (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96,
             (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384)
        return z + g[0] / df + g[1] / df ** 2 + g[2] / df ** 3
    low, high = 0.0, 1e7
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_central(mid, df) < confidence else (low, mid)
    return (low + high) / 2


def _t_central(t: float, df: int) -> float:
    """``P(|T| <= t)`` for Student's t with ``df`` degrees of freedom (A&S 26.7.3, 26.7.4)."""
    theta = math.atan(t / math.sqrt(df))
    c2, term, total = math.cos(theta) ** 2, 1.0, 0.0
    if df % 2 == 0:
        for k in range(0, df - 1, 2):  # 1 + 1/2 c^2 + (1*3)/(2*4) c^4 + ...
            total += term
            term *= c2 * (k + 1) / (k + 2)
        return math.sin(theta) * total
    if df == 1:
        return 2 * theta / math.pi
    term = math.cos(theta)
    for k in range(1, df - 1, 2):  # cos + 2/3 cos^3 + (2*4)/(3*5) cos^5 + ...
        total += term
        term *= c2 * (k + 1) / (k + 2)
    return 2 / math.pi * (theta + math.sin(theta) * total)


@dataclass(frozen=True)
class Distribution:
    """``n`` values: their mean with its 95% Student-t interval (None below 2 values) and median;
    ``estimated`` of them are estimates from characters rather than counts."""

    n: int
    mean: float
    median: float
    t95: Interval | None
    estimated: int = 0

    @classmethod
    def of(cls, values: Sequence[float], estimated: int = 0) -> Distribution | None:
        """None for no values."""
        if not values:
            return None
        mean = fmean(values)
        interval = None
        if len(values) > 1:
            half = t_quantile(CONFIDENCE, len(values) - 1) * stdev(values) / math.sqrt(len(values))
            interval = Interval(mean - half, mean + half, CONFIDENCE)
        return cls(len(values), mean, float(median(values)), interval, estimated)

    def to_json(self) -> dict:
        return {"n": self.n, "mean": round(self.mean, 3), "median": round(self.median, 3),
                "t95": None if self.t95 is None else [round(self.t95.low, 3), round(self.t95.high, 3)],
                "estimated": self.estimated}

    @classmethod
    def from_json(cls, data: dict | None) -> Distribution | None:
        if data is None:
            return None
        t95 = None if data["t95"] is None else Interval(data["t95"][0], data["t95"][1], CONFIDENCE)
        return cls(data["n"], data["mean"], data["median"], t95, data["estimated"])


class LengthNumbers(NamedTuple):
    """The numbers of one attempt that the statistics need (its texts are not kept)."""

    correct: bool | None
    thinking_tokens: int | None  # None: no thinking
    thinking_estimated: bool
    solution_tokens: int | None  # None: no solution (a truncated trace)
    solution_estimated: bool
    sections: int
    truncated: bool
    reflections: int


def thinking_tokens(attempt: Attempt) -> int | None:
    """The attempt's thinking tokens (see the module's rules), None without thinking."""
    t = attempt.thinking
    return None if t is None else (t.tokens if t.tokens is not None else estimate_tokens(t.text))


def length_numbers(attempt: Attempt) -> LengthNumbers:
    """The numbers of one attempt, by the module's rules."""
    t = attempt.thinking
    if attempt.truncated_thinking:
        solution, solution_estimated = None, False
    elif attempt.solution_tokens is not None:
        solution, solution_estimated = attempt.solution_tokens, False
    elif t is None and attempt.completion_tokens is not None:
        solution, solution_estimated = attempt.completion_tokens, False
    else:
        solution, solution_estimated = estimate_tokens(attempt.solution_text), True
    return LengthNumbers(attempt.correct, thinking_tokens(attempt),
                         t is not None and (t.tokens is None or t.tokens_estimated), solution, solution_estimated,
                         0 if t is None else len(t.sections), attempt.truncated_thinking,
                         0 if t is None else count_reflections(t.text))


class LengthColumns:
    """The :class:`LengthNumbers` of many attempts, kept compactly (about 30 bytes each, in arrays); iterating
    gives them back in order."""

    _NONE = -1  # for a count that is None

    def __init__(self) -> None:
        self.flags = bytearray()  # correct (0 wrong, 1 right, 2 None), then the three booleans as bits 2-4
        self.counts = array("q")  # thinking tokens, solution tokens, sections, reflections, per attempt

    def append(self, r: LengthNumbers) -> None:
        self.flags.append((2 if r.correct is None else int(r.correct)) | r.thinking_estimated << 2
                          | r.solution_estimated << 3 | r.truncated << 4)
        self.counts.extend((self._NONE if r.thinking_tokens is None else r.thinking_tokens,
                            self._NONE if r.solution_tokens is None else r.solution_tokens, r.sections, r.reflections))

    def __len__(self) -> int:
        return len(self.flags)

    def any_thinking(self) -> bool:
        return any(tokens != self._NONE for tokens in self.counts[0::4])

    def __iter__(self) -> Iterator[LengthNumbers]:
        counts = self.counts
        for i, f in enumerate(self.flags):
            thinking, solution, sections, reflections = counts[4 * i:4 * i + 4]
            yield LengthNumbers(None if f & 3 == 2 else bool(f & 1), None if thinking == self._NONE else thinking,
                                bool(f & 4), None if solution == self._NONE else solution, bool(f & 8), sections,
                                bool(f & 16), reflections)


@dataclass(frozen=True)
class LengthStats:
    """The length statistics of some attempts; every thinking statistic is None when none has thinking.

    ``reflections_per_1k`` is over the traces with at least one thinking token; ``reflections`` is their
    total count.
    """

    attempts: int
    thinking: int
    thinking_tokens: Distribution | None
    solution_tokens: Distribution | None
    sections: Distribution | None
    truncated: int
    truncated_share: float | None
    truncated_wilson95: Interval | None
    reflections: int
    reflections_per_1k: Distribution | None

    @classmethod
    def of(cls, rows: Iterable[LengthNumbers]) -> LengthStats:
        """From the numbers of some attempts, in one pass (the values kept in compact arrays)."""
        thinking, solution, sections, rates = array("q"), array("q"), array("q"), array("d")
        attempts = thinking_estimated = solution_estimated = truncated = reflections = 0
        for r in rows:
            attempts += 1
            if r.solution_tokens is not None:
                solution.append(r.solution_tokens)
                solution_estimated += r.solution_estimated
            if r.thinking_tokens is None:
                continue
            thinking.append(r.thinking_tokens)
            thinking_estimated += r.thinking_estimated
            sections.append(r.sections)
            truncated += r.truncated
            reflections += r.reflections
            if r.thinking_tokens:
                rates.append(1000 * r.reflections / r.thinking_tokens)
        traces = len(thinking)
        return cls(attempts, traces, Distribution.of(thinking, thinking_estimated),
                   Distribution.of(solution, solution_estimated), Distribution.of(sections), truncated,
                   truncated / traces if traces else None, wilson_interval(truncated, traces), reflections,
                   Distribution.of(rates))

    def to_json(self) -> dict:
        w = self.truncated_wilson95
        return {"attempts": self.attempts, "thinking": self.thinking,
                "thinking_tokens": _dist_json(self.thinking_tokens), "solution_tokens": _dist_json(self.solution_tokens),
                "sections": _dist_json(self.sections), "truncated": self.truncated,
                "truncated_share": None if self.truncated_share is None else round(self.truncated_share, 6),
                "truncated_wilson95": None if w is None else [round(w.low, 6), round(w.high, 6)],
                "reflections": self.reflections, "reflections_per_1k": _dist_json(self.reflections_per_1k)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LengthStats:
        w = data["truncated_wilson95"]
        return cls(data["attempts"], data["thinking"], Distribution.from_json(data["thinking_tokens"]),
                   Distribution.from_json(data["solution_tokens"]), Distribution.from_json(data["sections"]),
                   data["truncated"], data["truncated_share"], None if w is None else Interval(w[0], w[1], CONFIDENCE),
                   data["reflections"], Distribution.from_json(data["reflections_per_1k"]))


def _dist_json(d: Distribution | None) -> dict | None:
    return None if d is None else d.to_json()


@dataclass(frozen=True)
class LengthSummary:
    """One side's length statistics: over all its attempts, the right ones and the wrong ones
    (ungraded attempts count in ``all`` only)."""

    all: LengthStats
    right: LengthStats
    wrong: LengthStats

    @classmethod
    def of(cls, attempts: Iterable[Attempt]) -> LengthSummary:
        """From any iterable of attempts, in one pass."""
        columns = LengthColumns()
        for attempt in attempts:
            columns.append(length_numbers(attempt))
        return cls.of_numbers(columns)

    @classmethod
    def of_numbers(cls, rows: Iterable[LengthNumbers]) -> LengthSummary:
        """From the numbers of some attempts (iterated three times: a list, or :class:`LengthColumns`)."""
        return cls(LengthStats.of(rows), LengthStats.of(r for r in rows if r.correct is True),
                   LengthStats.of(r for r in rows if r.correct is False))

    @property
    def has_thinking(self) -> bool:
        return self.all.thinking > 0

    def to_json(self) -> dict:
        return {"all": self.all.to_json(), "right": self.right.to_json(), "wrong": self.wrong.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> LengthSummary | None:
        if data is None:
            return None
        return cls(LengthStats.from_json(data["all"]), LengthStats.from_json(data["right"]),
                   LengthStats.from_json(data["wrong"]))

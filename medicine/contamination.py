"""The contamination guard: problems used for evaluation stay out of the medicine.

Problems match by their whitespace- and case-normalised text, so the same question matches whether
it was loaded from a shipped benchmark, a JSONL file or another adapter (their ids may differ).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from quantmedic.taxonomy.records import Problem

_SPACE = re.compile(r"\s+")


def problem_key(problem: Problem | str) -> str:
    """A short hash of the problem's normalised text.

    >>> problem_key(Problem(text="What is  1+1?")) == problem_key("what is 1+1?")
    True
    """
    text = problem.text if isinstance(problem, Problem) else problem
    return hashlib.sha256(_SPACE.sub(" ", text).strip().lower().encode("utf-8")).hexdigest()[:16]


def problem_keys(problems: Iterable[Problem]) -> frozenset[str]:
    return frozenset(problem_key(p) for p in problems)

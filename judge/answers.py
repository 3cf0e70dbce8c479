"""Final-answer extraction from solution text: ``\\boxed{}``, GSM8K's ``####`` and ``A:`` lines, and
"the answer is" sentences. Pure functions; the last match wins, as in the benchmarks' own graders."""

from __future__ import annotations

import re

_HASHES = re.compile(r"^\s*####\s*(.+?)\s*$", re.MULTILINE)
_A_LINE = re.compile(r"^\s*A:\s*(.+?)\s*$", re.MULTILINE)
_ANSWER_IS = re.compile(r"(?:final answer|the answer)\s*(?:is|:)\s*\$?([^\n$]+?)\$?\s*(?:\.|$)",
                        re.IGNORECASE | re.MULTILINE)


def last_boxed(text: str) -> str | None:
    r"""The content of the last ``\boxed{...}`` (or ``\fbox{...}``), braces balanced.

    >>> last_boxed(r"so $x = \boxed{\frac{1}{2}}$.")
    '\\frac{1}{2}'
    >>> last_boxed("no box") is None
    True
    """
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for i in range(brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1 : i].strip()
    return None  # unbalanced: cut off inside the box


def extract_final_answer(text: str) -> str | None:
    """The final answer a solution states, or None when it states none.

    >>> extract_final_answer("16 - 3 = 13\\nA: 26")
    '26'
    >>> extract_final_answer("So she pays 5.\\n#### 5")
    '5'
    >>> extract_final_answer("Thus the answer is 42.")
    '42'
    """
    boxed = last_boxed(text)
    if boxed:
        return boxed
    for pattern in (_HASHES, _A_LINE, _ANSWER_IS):
        matches = pattern.findall(text)
        if matches and matches[-1].strip():
            return matches[-1].strip()
    return None

"""Splitting an unsegmented solution into steps.

The rules, applied in order (the first that yields two or more steps wins):

1. **Explicit markers.** Lines that start with ``Step N``, ``## Step N`` or ``**Step N`` begin a
   new step (the format quantmedic's own generation asks for). Text before the first marker is a
   step of its own.
2. **Paragraphs.** Blank lines separate steps (ProcessBench's and most chat models' style), except
   inside ``$$ ... $$`` / ``\\[ ... \\]`` display math, which stays with its paragraph.
3. **Lines.** Otherwise every non-blank line is a step (GSM8K's style).

Whitespace at either end of a step is stripped and empty steps are dropped. A text with no
non-blank content yields no steps.
"""

from __future__ import annotations

import re

_STEP_MARKER = re.compile(r"^\s*(?:#{1,6}\s*)?(?:\*\*)?\s*step\s*\d+\b", re.IGNORECASE | re.MULTILINE)
_BLANK_LINES = re.compile(r"\n\s*\n")


def _by_markers(text: str) -> list[str]:
    starts = [m.start() for m in _STEP_MARKER.finditer(text)]
    if not starts:
        return []
    bounds = ([0] if starts[0] > 0 else []) + starts + [len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def _by_paragraphs(text: str) -> list[str]:
    merged: list[str] = []
    dollars_open, bracket_depth = False, 0
    for piece in _BLANK_LINES.split(text):
        if (dollars_open or bracket_depth > 0) and merged:
            merged[-1] += "\n\n" + piece
        else:
            merged.append(piece)
        dollars_open ^= piece.count("$$") % 2 == 1
        bracket_depth = max(0, bracket_depth + piece.count("\\[") - piece.count("\\]"))
    return merged


def split_steps(text: str) -> list[str]:
    """Split solution text into steps by the module's documented rules.

    >>> split_steps("Step 1: 2+2=4\\nso four\\nStep 2: A: 4")
    ['Step 1: 2+2=4\\nso four', 'Step 2: A: 4']
    >>> split_steps("First, x = 2.\\n\\nThen y = 3.")
    ['First, x = 2.', 'Then y = 3.']
    >>> split_steps("a = 1\\nb = 2\\nA: 3")
    ['a = 1', 'b = 2', 'A: 3']
    """
    text = text.replace("\r\n", "\n").strip()
    if not text:
        return []
    for rule in (_by_markers, _by_paragraphs, str.splitlines):
        steps = [s.strip() for s in rule(text) if s.strip()]
        if len(steps) >= 2:
            return steps
    return [text]

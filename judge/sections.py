"""Segmenting a reasoning model's thinking into *sections* a judge and a human can work with.

A thinking trace is hundreds of short paragraphs ("Wait, but ...", "So 17 ..."); numbering each as a
step would give a judge 350 steps. The rules, applied in order:

1. **Paragraphs.** Blank lines separate paragraphs, except inside ``$$ ... $$`` or ``\\[ ... \\]``
   display math, which stays with its paragraph. A paragraph longer than ``max_section_chars`` is
   cut at its last line break, else sentence end, else space before that length (else at that
   length).
2. **Discourse shifts.** A paragraph that opens with a shift — "Wait", "But wait", "Hmm",
   "Alternatively", "Actually", "Hold on", "On second thought", "Let me check / verify /
   double-check / re-check / confirm / recompute / try / think again / go back / reconsider", "Another
   approach / way / method", "Let's check / verify / try", "Maybe I (made / should)", "To verify /
   double-check" (:data:`SHIFT`) — begins a new section; other paragraphs join the current one.
3. **Size.** A paragraph that would take the current section past ``max_section_chars`` begins a new
   one; a section shorter than ``min_section_chars`` is joined to the one before it (the first
   section is joined to the next).
4. **Number.** While there are more than ``max_sections``, the two neighbours with the smallest
   combined length are merged. Each section is then at most ``max_section_chars`` long unless the
   thinking is too long for that many (``max_sections`` × ``max_section_chars``): the number bound wins.

Each section keeps its character offsets in the original thinking text (:class:`Section`), so a verdict
that names a section points into the trace; together the sections cover every non-blank character.
"""

from __future__ import annotations

import heapq
import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

from quantmedic.taxonomy.errors import FieldError
from quantmedic.taxonomy.records import Section

SHIFT = re.compile(
    r"[\s*_#>]*(?:wait\b|but wait\b|hmm+\b|alternatively\b|actually\b|hold on\b|on second thought\b|"
    r"let me (?:check|verify|double[- ]check|re-?check|confirm|recompute|re-?calculate|try|think again|go back|"
    r"reconsider|re-?examine|see if)\b|let'?s (?:check|verify|double[- ]check|try|re-?examine)\b|"
    r"another (?:approach|way|method|idea)\b|maybe i (?:made|should|need)\b|to (?:verify|double[- ]check)\b)",
    re.IGNORECASE)
"""A paragraph that opens with one of these begins a new section (rule 2)."""

_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n\s*")


class SectionSettings(BaseModel):
    """How thinking is cut into sections (see :mod:`quantmedic.judge.sections`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_section_chars: int = Field(300, ge=0, description="A section shorter than this joins its neighbour.")
    max_section_chars: int = Field(4000, ge=200, description="A section grows no longer than this (while "
                                                             "the number bound allows).")
    max_sections: int = Field(64, ge=1, description="At most this many sections per thinking.")

    @model_validator(mode="after")
    def _min_below_max(self) -> "SectionSettings":
        if self.min_section_chars >= self.max_section_chars:
            raise FieldError("min_section_chars", "must be smaller than max_section_chars")
        return self


def paragraphs(text: str) -> list[tuple[int, int]]:
    """The ``(start, end)`` offsets of the paragraphs of ``text`` (rule 1, before any cut).

    >>> t = "a\\n\\n$$\\nx\\n\\ny\\n$$\\n\\n b "
    >>> [t[a:b] for a, b in paragraphs(t)]
    ['a', '$$\\nx\\n\\ny\\n$$', 'b']
    """
    spans: list[tuple[int, int]] = []
    dollars_open, bracket_depth = False, 0
    cuts = [(m.start(), m.end()) for m in _BLANK_LINES.finditer(text)] + [(len(text), len(text))]
    position = 0
    for cut_start, cut_end in cuts:
        piece = text[position:cut_start]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            a, b = position + lead, position + len(piece.rstrip())
            if (dollars_open or bracket_depth > 0) and spans:
                spans[-1] = (spans[-1][0], b)
            else:
                spans.append((a, b))
            dollars_open ^= piece.count("$$") % 2 == 1
            bracket_depth = max(0, bracket_depth + piece.count("\\[") - piece.count("\\]"))
        position = cut_end
    return spans


def _cut(text: str, start: int, end: int, limit: int) -> list[tuple[int, int]]:
    """``text[start:end]`` in pieces of at most ``limit`` characters, cut at the last line break, else
    sentence end, else space before the limit."""
    pieces = []
    while end - start > limit:
        window = text[start:start + limit]
        cut = max(window.rfind("\n"), 0)
        if cut < limit // 4:
            cut = max(window.rfind(". "), window.rfind("? "), window.rfind("! ")) + 1
        if cut < limit // 4:
            cut = window.rfind(" ")
        if cut < limit // 4:
            cut = limit
        piece_end = start + len(window[:cut].rstrip())
        pieces.append((start, max(piece_end, start + 1)))
        start += cut
        while start < end and text[start].isspace():
            start += 1
    if start < end:
        pieces.append((start, end))
    return pieces


def _group(text: str, spans: list[tuple[int, int]], settings: SectionSettings) -> list[list[int]]:
    """Rules 2 and 3: ``[start, end]`` of each section, from the paragraphs."""
    groups: list[list[int]] = []
    for a, b in spans:
        shift = SHIFT.match(text, a) is not None
        if groups and not shift and b - groups[-1][0] <= settings.max_section_chars:
            groups[-1][1] = b
        else:
            groups.append([a, b])
    merged: list[list[int]] = []
    for group in groups:
        short = merged and merged[-1][1] - merged[-1][0] < settings.min_section_chars
        if merged and (group[1] - group[0] < settings.min_section_chars or short) \
                and group[1] - merged[-1][0] <= settings.max_section_chars:
            merged[-1][1] = group[1]
        else:
            merged.append(group)
    return merged


def _bound_number(groups: list[list[int]], most: int) -> list[list[int]]:
    """Rule 4: merge the neighbours with the smallest combined length until at most ``most`` remain."""
    if len(groups) <= most:
        return groups
    alive = [True] * len(groups)
    nxt = list(range(1, len(groups))) + [-1]
    prv = [-1] + list(range(len(groups) - 1))
    heap = [(groups[i + 1][1] - groups[i][0], i, i + 1) for i in range(len(groups) - 1)]
    heapq.heapify(heap)
    count = len(groups)
    while count > most and heap:
        size, left, right = heapq.heappop(heap)
        if not (alive[left] and alive[right] and nxt[left] == right and groups[right][1] - groups[left][0] == size):
            continue
        groups[left][1] = groups[right][1]
        alive[right] = False
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prv[nxt[right]] = left
            heapq.heappush(heap, (groups[nxt[left]][1] - groups[left][0], left, nxt[left]))
        if prv[left] >= 0:
            heapq.heappush(heap, (groups[left][1] - groups[prv[left]][0], prv[left], left))
        count -= 1
    return [g for g, keep in zip(groups, alive) if keep]


def split_sections(text: str, settings: SectionSettings = SectionSettings()) -> tuple[Section, ...]:
    """The sections of a thinking text, by the module's rules.

    >>> t = "Let x = 2.\\n\\nSo 2x = 4.\\n\\nWait, check: 2*2 = 4. Yes."
    >>> [t[s.start:s.end] for s in split_sections(t, SectionSettings(min_section_chars=0, max_section_chars=200))]
    ['Let x = 2.\\n\\nSo 2x = 4.', 'Wait, check: 2*2 = 4. Yes.']
    >>> split_sections("   ")
    ()
    """
    spans = [piece for a, b in paragraphs(text) for piece in _cut(text, a, b, settings.max_section_chars)]
    groups = _bound_number(_group(text, spans, settings), settings.max_sections)
    return tuple(Section(start=a, end=b) for a, b in groups)

"""Planning the windows in which a long thinking is judged (pure: no server, no I/O).

A reasoning model's thinking (median 24,000 characters) does not fit a small judge's context, so it
is judged in *windows* of consecutive sections, one request each, scanned forward until the first
window with an error. The rules:

1. **Room.** A window's sections get the judge's context minus everything else in the request: the
   system message, the problem and the frame of the user message, the answer's ``max_tokens``, the
   room for one re-ask (an echo of the invalid answer and the feedback) and a safety margin
   (:attr:`Budget.room`). Every size is counted with the judge's tokenizer where known
   (:mod:`quantmedic.judge.tokens`).
2. **Context.** Each window after the first shows, before its sections and apart from them, the
   sections just before it — as many whole ones as fit in ``context_share`` of the room, at least
   the last one, cut from its start to fit if needed — stated as already checked, for context only.
3. **Sections.** Then as many whole sections as fit in what is left, in order, at least one; a
   section too long for that is cut in its middle, its start and end kept, with a visible
   ``[... N characters left out ...]`` note. So the windows cover every section once, in order.

Sections keep their global numbers (``[Section 12]``) in every window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

Count = Callable[[str], int]

MIN_ROOM = 48
"""Fewer tokens than this for a window's sections: the item cannot be judged in windows."""


class NoRoom(ValueError):
    """The judge's context leaves (almost) no room for the thinking after the fixed parts."""


@dataclass(frozen=True)
class Budget:
    """The token budget of one window request."""

    context_tokens: int
    fixed_tokens: int
    context_share: float = 0.25

    @property
    def room(self) -> int:
        """Tokens left for the sections shown (context and judged)."""
        return self.context_tokens - self.fixed_tokens


@dataclass(frozen=True)
class Shown:
    """One section as a window shows it: its global index, its text (maybe cut) and what was cut."""

    index: int
    text: str
    left_out: int = 0


@dataclass(frozen=True)
class Window:
    """Consecutive sections judged in one request, after the context sections just before them."""

    number: int
    judged: tuple[Shown, ...]
    context: tuple[Shown, ...] = ()
    tokens: int = 0

    @property
    def first(self) -> int:
        return self.judged[0].index

    @property
    def last(self) -> int:
        return self.judged[-1].index


def section_line(index: int, text: str) -> str:
    """A section as the user message shows it, with its marker."""
    return f"[Section {index}] {text}\n"


def left_out_note(chars: int) -> str:
    return f"[... {chars} characters left out ...]"


def cut_to_fit(text: str, tokens: int, count: Count, keep: str = "both") -> tuple[str, int]:
    """``text`` cut so that ``count`` of it is at most ``tokens``, and how many characters were left
    out: ``keep="both"`` keeps its start and end around the note, ``"end"`` keeps its end.

    >>> cut_to_fit("abcdefghij" * 3, 12, len)
    ('[... 30 characters left out ...]', 30)
    >>> cut_to_fit("abcdefghij" * 10, 40, len)
    ('abcd[... 92 characters left out ...]ghij', 92)
    >>> cut_to_fit("short", 99, len)
    ('short', 0)
    """
    if count(text) <= tokens:
        return text, 0

    def shown(kept: int) -> str:
        note = left_out_note(len(text) - kept)
        if keep == "end":
            return note + " " + text[len(text) - kept:] if kept else note
        head = kept // 2
        return text[:head] + note + text[len(text) - (kept - head):] if kept else note

    low, high = 0, len(text) - 1  # the most characters kept whose shown text fits
    while low < high:
        middle = (low + high + 1) // 2
        if count(shown(middle)) <= tokens:
            low = middle
        else:
            high = middle - 1
    return shown(low), len(text) - low


def _context(texts: Sequence[str], start: int, share: int, count: Count) -> tuple[tuple[Shown, ...], int]:
    """Rule 2: the sections before ``start`` that fit in ``share`` tokens (the last one at least, cut)."""
    shown: list[Shown] = []
    used = 0
    for index in range(start - 1, -1, -1):
        cost = count(section_line(index, texts[index]))
        if used + cost <= share:
            shown.insert(0, Shown(index, texts[index]))
            used += cost
            continue
        if not shown:
            overhead = count(section_line(index, ""))
            text, cut = cut_to_fit(texts[index], max(share - overhead, 1), count, keep="end")
            shown.insert(0, Shown(index, text, cut))
            used += count(section_line(index, text))
        break
    return tuple(shown), used


def plan_windows(texts: Sequence[str], budget: Budget, count: Count) -> tuple[Window, ...]:
    """The windows of a thinking whose (escaped) section texts are ``texts``, by the module's rules.

    >>> plan = plan_windows(["a" * 30, "b" * 30, "c" * 30, "d" * 30], Budget(200, 100, 0.5), len)
    >>> [(w.first, w.last, [c.index for c in w.context]) for w in plan]
    [(0, 1, []), (2, 2, [1]), (3, 3, [2])]
    >>> all(w.tokens <= 100 for w in plan)
    True
    """
    room = budget.room
    if room < MIN_ROOM:
        raise NoRoom(f"the judge's context ({budget.context_tokens} tokens) leaves {max(room, 0)} tokens for the "
                     f"thinking after the system message, the problem, the answer and the margin "
                     f"({budget.fixed_tokens} tokens); raise --context-tokens or lower --max-tokens")
    windows: list[Window] = []
    start = 0
    while start < len(texts):
        context, used = _context(texts, start, int(room * budget.context_share), count) if start else ((), 0)
        judged: list[Shown] = []
        index = start
        while index < len(texts):
            cost = count(section_line(index, texts[index]))
            if used + cost <= room:
                judged.append(Shown(index, texts[index]))
                used += cost
                index += 1
                continue
            if not judged:  # rule 3: one section too long for what is left, cut to fit
                overhead = count(section_line(index, ""))
                text, cut = cut_to_fit(texts[index], max(room - used - overhead, 1), count)
                judged.append(Shown(index, text, cut))
                used += count(section_line(index, text))
                index += 1
            break
        windows.append(Window(len(windows), tuple(judged), context, used))
        start = index
    return tuple(windows)

"""Separating a reasoning model's thinking from its solution.

The rules, applied to one model output (pure functions, no model or tokenizer needed):

1. **A separate field.** When the server returned the thinking apart (the OpenAI-compatible
   ``reasoning_content`` that vLLM's reasoning parsers fill, or a ``thinking``/``reasoning`` field of
   an input file), that is the thinking and the text is the solution. It is closed unless the output
   stopped at the token limit with no solution text at all. A field present but blank is an empty,
   closed thinking (the model closed it at once), unless the text itself holds a marker pair.
2. **Markers.** Otherwise the known marker pairs are looked for: ``<think>``/``</think>`` (DeepSeek-R1
   and its distills, QwQ, Qwen3), ``<thinking>``/``</thinking>``, ``<reasoning>``/``</reasoning>``,
   ``<|begin_of_thought|>``/``<|end_of_thought|>`` (Sky-T1, Bespoke-Stratos) and ``◁think▷``/``◁/think▷``
   (Kimi). The thinking starts at an opening marker at the very start of the text (blanks before it
   are ignored), or at the start of the text when the *prompt* already opened it (R1's chat template
   ends with ``<think>\\n``), or — a closing marker with no opening one — at the start of the text. An output
   that repeats the opening marker its prompt already opened begins with that one opening, not a nested one.
3. **Nesting.** Inside the thinking, further opening markers nest: the thinking ends at the closing
   marker that brings the depth back to zero. A thinking that never ends is **unclosed**: the whole
   rest of the text is thinking, there is no solution (the output was cut at the token limit, or is
   degenerate), and no answer is ever read from inside it.
4. **Strays.** Marker tags left in the solution (a stray ``</think>`` after the first, a ``<think>``
   opened and closed again) are removed from it, each counted in :attr:`Split.stray_markers`.
5. A text with no marker at all, from a prompt that did not open one, has no thinking.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MARKERS: tuple[tuple[str, str], ...] = (
    ("<think>", "</think>"),
    ("<thinking>", "</thinking>"),
    ("<reasoning>", "</reasoning>"),
    ("<|begin_of_thought|>", "<|end_of_thought|>"),
    ("◁think▷", "◁/think▷"),
)
"""The (opening, closing) marker pairs of the reasoning models whose formats are known."""

REASONING_FIELD = "reasoning_content"


@dataclass(frozen=True)
class Split:
    """A model output split into its thinking (None: it had none) and its solution."""

    thinking: str | None
    solution: str
    closed: bool = True
    markers: str | None = None
    stray_markers: int = 0


def prompt_opens_thinking(prompt: str | None) -> str | None:
    """The opening marker the prompt ends with (R1's template ends with ``<think>\\n``), if any.

    >>> prompt_opens_thinking("<｜Assistant｜><think>\\n"), prompt_opens_thinking("Assistant:")
    ('<think>', None)
    """
    tail = (prompt or "").rstrip()
    for opening, _ in MARKERS:
        if tail.endswith(opening):
            return opening
    return None


def _pair_in(text: str, opened_by: str | None) -> tuple[str, str] | None:
    """The marker pair this text uses: the prompt's, else the first whose marker appears in it."""
    if opened_by is not None:
        return next(pair for pair in MARKERS if pair[0] == opened_by)
    head = text.lstrip()
    for pair in MARKERS:
        if head.startswith(pair[0]):
            return pair
    for pair in MARKERS:
        if pair[1] in text:
            return pair
    return None


def _strip_strays(solution: str, pair: tuple[str, str]) -> tuple[str, int]:
    pattern = re.compile("|".join(re.escape(marker) for marker in pair))
    cleaned, count = pattern.subn("", solution)
    return cleaned.strip(), count


def split_thinking(text: str, *, prompt: str | None = None, reasoning: str | None = None,
                   finish_reason: str | None = None) -> Split:
    """Split one output by the module's rules.

    >>> split_thinking("<think>\\n2+2 is 4.\\n</think>\\n\\nSo \\\\boxed{4}.")
    Split(thinking='2+2 is 4.', solution='So \\\\boxed{4}.', closed=True, markers='<think>', stray_markers=0)
    >>> s = split_thinking("Hmm, 2+2... Wait", prompt="<｜Assistant｜><think>\\n")
    >>> s.thinking, s.solution, s.closed
    ('Hmm, 2+2... Wait', '', False)
    >>> split_thinking("Let x = 2.").thinking is None
    True
    >>> split_thinking("a <think>b</think> c</think> d").thinking
    'a <think>b</think> c'
    >>> s = split_thinking("<think>\\nHmm</think>\\n4", prompt="<｜Assistant｜><think>\\n")
    >>> s.thinking, s.solution, s.closed
    ('Hmm', '4', True)
    >>> split_thinking("x = 4", reasoning="")
    Split(thinking='', solution='x = 4', closed=True, markers='reasoning_content', stray_markers=0)
    """
    if reasoning is not None and (reasoning.strip() or not any(c in text for _, c in MARKERS)):
        closed = bool(text.strip()) or finish_reason != "length"
        return Split(reasoning.strip(), text.strip(), closed=closed, markers=REASONING_FIELD)
    opened_by = prompt_opens_thinking(prompt)
    pair = _pair_in(text, opened_by)
    if pair is None:
        return Split(None, text.strip())
    opening, closing = pair
    head = text.lstrip()
    starts_open = head.startswith(opening)  # also when the prompt opened it: the output repeated the marker
    body = head[len(opening):] if starts_open else text
    if opened_by is None and not starts_open and closing not in body:
        return Split(None, text.strip())
    depth = 1
    for tag in re.finditer(f"{re.escape(opening)}|{re.escape(closing)}", body):
        depth += 1 if tag.group() == opening else -1
        if depth == 0:
            solution, strays = _strip_strays(body[tag.end():], pair)
            return Split(body[:tag.start()].strip(), solution, closed=True, markers=opening, stray_markers=strays)
    return Split(body.strip(), "", closed=False, markers=opening)

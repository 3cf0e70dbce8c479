"""How long the pairs are, so that ``train dpo --max-length`` can be chosen before training.

A pair's length is what TRL's ``DPOTrainer`` trains on: the prompt through the chat template with the
generation prompt, plus the longer of its two answers (``prompt + chosen`` or ``prompt + rejected``
through the template, less the shared prompt tokens). With a tokenizer (``--tokenizer``: the model
that will be trained) the lengths are tokens, counted exactly so; without one they are characters,
with tokens estimated from them (:data:`~quantmedic.judge.step_format.CHARS_PER_TOKEN`), and the
report says which. The tokenizer's template is also checked to keep the thinking of trace pairs
(some reasoning templates strip ``<think>...</think>`` from assistant turns).
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median
from typing import Any

from quantmedic.judge.step_format import CHARS_PER_TOKEN
from quantmedic.judge.thinking import MARKERS
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.records import PreferencePair

MAX_LENGTHS = (1024, 2048, 4096, 8192, 16384, 32768)
"""The ``--max-length`` values the report counts the pairs that fit under."""
THINKING_MARKERS = MARKERS
"""The marker pairs a trace's text can open with: those :mod:`quantmedic.judge.thinking` knows."""


def thinking_probe(content: str) -> str | None:
    """A piece of an answer's thinking that a template that keeps the thinking must render (None: no thinking).

    >>> thinking_probe("<think>\\nfirst I add\\n</think>\\n\\n4")
    'first I add'
    """
    for opening, closing in THINKING_MARKERS:
        if content.startswith(opening):
            text = content[len(opening):].split(closing, 1)[0].strip()
            return text[:64].strip() or None
    return None


def load_tokenizer(name: str) -> Any:
    """The tokenizer of a model folder or Hub id, with a chat template (one clean line otherwise)."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise InputError(name, "counting tokens needs transformers: pip install \"quantmedic[quantize]\"",
                         field="--tokenizer", usage=True) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise InputError(name, f"no tokenizer could be loaded ({str(error).splitlines()[0]})", field="--tokenizer",
                         usage=True) from None
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(name, "the tokenizer has no chat template (the pairs are chat messages)", field="--tokenizer",
                         usage=True)
    return tokenizer


def _ids(tokenizer: Any, messages: list[dict], **kwargs) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"])


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def pair_tokens(tokenizer: Any, pair: PreferencePair) -> tuple[int, bool]:
    """The pair's length in tokens as TRL tokenizes it, and whether the template kept both sides' thinking (when
    it does not, as ``train dpo``'s text format tokenizes it: the rendered prompt, then each answer whole)."""
    prompt = [m.model_dump() for m in pair.prompt]
    prompt_ids = _ids(tokenizer, prompt, add_generation_prompt=True)
    longest, kept = 0, True
    sides = [[m.model_dump() for m in side] for side in (pair.chosen, pair.rejected)]
    full = [_ids(tokenizer, prompt + side) for side in sides]
    start = min(_common(prompt_ids, ids) for ids in full)
    for side, ids in zip(sides, full):
        longest = max(longest, len(ids) - start)
        probe = thinking_probe(side[-1]["content"])
        if probe and probe not in tokenizer.decode(ids[start:]):
            kept = False
    if not kept:  # `train dpo` trains such pairs as text, the answers whole (+ the end of turn): count them so
        longest = max(len(tokenizer(side[-1]["content"], add_special_tokens=False)["input_ids"]) + 1 for side in sides)
        start = len(prompt_ids)
    return start + longest, kept


def _summary(values: Sequence[int]) -> dict[str, Any]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] if ordered else None
    return {"max": max(ordered, default=None), "median": median(ordered) if ordered else None, "p90": p90,
            "min": min(ordered, default=None)}


def length_report(pairs: Sequence[PreferencePair], tokenizer_name: str | None = None) -> dict[str, Any]:
    """The pairs' lengths for ``medicine.json``: tokens with a tokenizer, else characters (and estimated tokens)."""
    if tokenizer_name:
        tokenizer = load_tokenizer(tokenizer_name)
        counted = [pair_tokens(tokenizer, p) for p in pairs]
        lengths = [n for n, _ in counted]
        dropped = sum(1 for _, kept in counted if not kept)
        report: dict[str, Any] = {"unit": "tokens", "tokenizer": tokenizer_name, "thinking_dropped_by_template": dropped}
    else:
        chars = [sum(len(m.content) for m in p.prompt) + max(sum(len(m.content) for m in side)
                                                              for side in (p.chosen, p.rejected)) for p in pairs]
        lengths = [round(n / CHARS_PER_TOKEN) for n in chars]
        report = {"unit": "characters", "tokenizer": None, "characters": _summary(chars),
                  "note": "no --tokenizer was given: the token counts are estimated from the characters; pass "
                          "--tokenizer MODEL for exact counts (or let `train dpo` count them)"}
    report["tokens" if tokenizer_name else "estimated_tokens"] = _summary(lengths)
    report["pairs_over_max_length"] = {str(m): sum(1 for n in lengths if n > m) for m in MAX_LENGTHS}
    by_kind: dict[str, list[int]] = {}
    for pair, n in zip(pairs, lengths):
        by_kind.setdefault(pair.kind, []).append(n)
    report["by_kind"] = {k: _summary(v) for k, v in sorted(by_kind.items())}
    thinking = [p.rejected_thinking_chars for p in pairs if p.rejected_thinking_chars is not None]
    chosen = [p.chosen_thinking_chars for p in pairs if p.chosen_thinking_chars is not None]
    if thinking:
        report["thinking_chars"] = {"rejected": _summary(thinking), "chosen": _summary(chosen)}
    return report

"""Trace pairs in TRL's standard (plain text) format, for chat templates that drop the thinking.

DeepSeek-R1's chat template (and its distills') cuts everything up to ``</think>`` from assistant
turns, so TRL's conversational path would train on the solutions alone. In the text format the
template renders only the prompt (with the generation prompt: R1's ends ``<｜Assistant｜><think>\\n``);
each answer is its content whole, less what the rendered prompt already ends with, plus the
template's end of turn. TRL then tokenizes the strings with the tokenizer's special tokens
(``tokenizer(text=...)``) and appends ``eos_token`` to an answer that does not end with it
(``DPOTrainer._prepare_dataset``), so a BOS that the rendered prompt starts with is left to the
tokenizer when it adds one itself (else it would be there twice).
"""

from __future__ import annotations

from typing import Any

from quantmedic.medicine.lengths import THINKING_MARKERS, thinking_probe

from .dpo_config import ThinkingDropped

TEXT_FORMAT = "text (the chat template drops <think> from assistant turns)"
CONVERSATIONAL = "conversational"
_SENTINEL = "\x00quantmedic-answer\x00"


def trace_completion(prompt_text: str, content: str, end_of_turn: str = "") -> str:
    """``content`` as the completion of ``prompt_text``: less the opening thinking marker (and what follows it)
    that the prompt already ends with, plus ``end_of_turn``.

    >>> trace_completion("<｜User｜>2+2?<｜Assistant｜><think>\\n", "<think>\\nadd\\n</think>\\n\\n4", "<｜end▁of▁sentence｜>")
    'add\\n</think>\\n\\n4<｜end▁of▁sentence｜>'
    >>> trace_completion("<｜User｜>2+2?<｜Assistant｜>", "<think>\\nadd\\n</think>\\n\\n4")
    '<think>\\nadd\\n</think>\\n\\n4'
    """
    opening = next((o for o, _ in THINKING_MARKERS if content.startswith(o)), None)
    overlap = 0
    if opening:
        overlap = next((k for k in range(min(len(prompt_text), len(content)), len(opening) - 1, -1)
                        if prompt_text.endswith(content[:k])), 0)
    return content[overlap:] + end_of_turn


def _render(tokenizer: Any, messages: list[dict], **kwargs) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def template_drops_thinking(dataset: Any, tokenizer: Any) -> list[int]:
    """Rows (conversational ones) with an answer whose thinking the chat template does not render."""
    rows = []
    for i, (prompt, *sides) in enumerate(zip(dataset["prompt"], dataset["chosen"], dataset["rejected"])):
        if not isinstance(prompt, list):
            continue
        for side in sides:
            probe = thinking_probe(side[-1]["content"])
            if probe and probe not in _render(tokenizer, prompt + side):
                rows.append(i)
                break
    return rows


def end_of_turn(tokenizer: Any, prompt: list[dict]) -> str:
    """What the template puts after an assistant turn's content (R1's: ``<｜end▁of▁sentence｜>``), trimmed."""
    text = _render(tokenizer, prompt + [{"role": "assistant", "content": _SENTINEL}])
    return text.split(_SENTINEL, 1)[1].strip() if _SENTINEL in text else ""


def added_bos(tokenizer: Any) -> str | None:
    """The BOS token that tokenizing text adds by itself (None when it adds none)."""
    with_special = tokenizer("x")["input_ids"]
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    bos_id = tokenizer.bos_token_id
    if bos_id is not None and len(with_special) > len(plain) and with_special[0] == bos_id:
        return tokenizer.bos_token
    return None


def to_text_format(dataset: Any, tokenizer: Any) -> Any:
    """The pairs as prompt/chosen/rejected strings (see the module docstring); other columns are kept."""
    bos = added_bos(tokenizer)

    def convert(row: dict) -> dict:
        if any(len(side) != 1 or side[0].get("role") != "assistant" for side in (row["chosen"], row["rejected"])):
            raise ThinkingDropped("a pair whose answer is not one assistant turn cannot be put in the text format "
                                  "(the chat template drops <think> from assistant turns)")
        prompt = _render(tokenizer, row["prompt"], add_generation_prompt=True)
        end = end_of_turn(tokenizer, row["prompt"])
        sides = {k: trace_completion(prompt, row[k][0]["content"], end) for k in ("chosen", "rejected")}
        if bos and prompt.startswith(bos):
            prompt = prompt[len(bos):]  # the tokenizer adds it again
        return {"prompt": prompt, **sides}

    rows = [convert(row) for row in dataset.select_columns(["prompt", "chosen", "rejected"])]
    dataset = dataset.remove_columns(["prompt", "chosen", "rejected"])  # in memory: no cache files beside the data
    for column in ("prompt", "chosen", "rejected"):
        dataset = dataset.add_column(column, [row[column] for row in rows])
    return dataset


def training_set(dataset: Any, tokenizer: Any) -> tuple[Any, str]:
    """The pairs in the format TRL should train them in, and that format's name."""
    if template_drops_thinking(dataset, tokenizer):
        return to_text_format(dataset, tokenizer), TEXT_FORMAT
    return dataset, CONVERSATIONAL

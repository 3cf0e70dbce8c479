"""One question put to every judge about an item: a solution, or one window of a thinking."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .prompt import feedback_message
from .validate import Invalid, ParsedAnswer

if TYPE_CHECKING:
    from .runner import JudgeSpec


def append_feedback(messages: list[dict], raw: str | None, reason: str) -> list[dict]:
    """A solution's re-ask: the conversation so far, the invalid answer and the reason."""
    return [*messages, {"role": "assistant", "content": raw or ""},
            {"role": "user", "content": feedback_message(reason)}]


@dataclass(frozen=True)
class Question:
    """What every judge is asked about one item (a solution, or one window of a thinking): the messages
    (per judge), the output schema, the check of an answer, the answer's index field and the re-ask."""

    messages: dict[JudgeSpec, list[dict]]
    schema: dict
    schema_sha: str
    check: Callable[[str | None, str | None], ParsedAnswer | Invalid]
    index_field: str = "first_wrong_step"
    reask: Callable[[list[dict], str | None, str], list[dict]] = append_feedback

"""The step-aligned ("format alignment") generation prompt, and parsing a completion into an Attempt.

The model is asked for explicitly delimited steps, ``Step 1: ...`` one per paragraph, and a final
``\\boxed{}`` answer, so that its steps line up with the steps a judge names. The prompt goes
through the model's own chat template; the completion is split with
:func:`quantmedic.judge.segment.split_steps` and its answer read with
:func:`quantmedic.judge.answers.extract_final_answer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quantmedic.judge.answers import extract_final_answer
from quantmedic.judge.segment import split_steps
from quantmedic.taxonomy.records import Attempt, Problem, Quantization, Sampling

STEP_INSTRUCTION = (
    "Solve the following math problem step by step. Write each step as its own paragraph that starts "
    'with "Step 1:", "Step 2:", and so on, with a blank line between steps. Give the final answer in '
    "the last step as \\boxed{ANSWER}."
)
CHOICE_INSTRUCTION = "Put only the letter of the correct option in \\boxed{}."
EMPTY_OUTPUT = "[no output]"
"""The single step of an attempt whose completion is blank (an Attempt needs at least one step)."""


@dataclass(frozen=True)
class ModelOutput:
    """What a backend returned for one prompt: the text and why and after how many tokens it stopped."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int | None = None


def user_message(problem: Problem) -> str:
    """The user turn: the instruction, the problem and, for multiple choice, its lettered options."""
    parts = [STEP_INSTRUCTION, "", f"Problem: {problem.text.strip()}"]
    if problem.choices:
        parts += ["", "Options:"] + [f"{chr(ord('A') + i)}. {c}" for i, c in enumerate(problem.choices)]
        parts += ["", CHOICE_INSTRUCTION]
    return "\n".join(parts)


def step_messages(problem: Problem, system: str | None = None) -> list[dict[str, str]]:
    """Chat messages asking for a step-delimited solution of ``problem``.

    >>> step_messages(Problem(text="1+1?"))[-1]["content"].endswith("Problem: 1+1?")
    True
    """
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user_message(problem)}]


def render_prompt(tokenizer: Any, problem: Problem, system: str | None = None) -> str:
    """The prompt text through the tokenizer's own chat template, ready for the assistant's turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; the step prompt needs a chat model")
    return tokenizer.apply_chat_template(step_messages(problem, system), tokenize=False, add_generation_prompt=True)


def parse_completion(problem: Problem, completion: ModelOutput, *, model: str,
                     quantization: Quantization | None = None, sampling: Sampling = Sampling(),
                     source: str | None = None) -> Attempt:
    """An Attempt from one completion: its steps, final answer, stop reason, length and provenance.

    >>> a = parse_completion(Problem(text="2+2?"), ModelOutput("Step 1: 2+2=4\\n\\nStep 2: \\\\boxed{4}", "stop", 9),
    ...                      model="m")
    >>> a.steps, a.final_answer, a.finish_reason
    (('Step 1: 2+2=4', 'Step 2: \\\\boxed{4}'), '4', 'stop')
    """
    steps = split_steps(completion.text) or [EMPTY_OUTPUT]
    return Attempt(problem=problem, steps=tuple(steps), final_answer=extract_final_answer(completion.text),
                   model=model, quantization=quantization, sampling=sampling,
                   finish_reason=completion.finish_reason, completion_tokens=completion.completion_tokens,
                   source=source)

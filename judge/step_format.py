"""The step-aligned ("format alignment") generation prompt, and parsing a completion into an Attempt.

The model is asked for explicitly delimited steps, ``Step 1: ...`` one per paragraph, and a final
``\\boxed{}`` answer, so that its steps line up with the steps a judge names. The prompt goes
through the model's own chat template; the completion is split with
:func:`quantmedic.judge.segment.split_steps` and its answer read with
:func:`quantmedic.judge.answers.extract_final_answer`.

A reasoning model's completion is first split into its thinking and its solution
(:func:`quantmedic.judge.thinking.split_thinking`); the thinking is cut into sections
(:mod:`quantmedic.judge.sections`), the solution into steps, and the answer is read from the solution
only. A thinking that never ended leaves no solution: one :data:`NO_SOLUTION` step, no answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quantmedic.judge.answers import extract_final_answer
from quantmedic.judge.sections import SectionSettings, split_sections
from quantmedic.judge.segment import split_steps
from quantmedic.judge.thinking import MARKERS, split_thinking
from quantmedic.taxonomy.records import NO_SOLUTION, Attempt, Problem, Quantization, Sampling, Thinking

STEP_INSTRUCTION = (
    "Solve the following math problem step by step. Write each step as its own paragraph that starts "
    'with "Step 1:", "Step 2:", and so on, with a blank line between steps. Give the final answer in '
    "the last step as \\boxed{ANSWER}."
)
CHOICE_INSTRUCTION = "Put only the letter of the correct option in \\boxed{}."
REASONING_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
"""What reasoning models are asked (DeepSeek-R1's recommended prompt, lighteval's and *Quantization Hurts
Reasoning?*'s): after the problem, with no step format — they think first, then write the solution."""
EMPTY_OUTPUT = "[no output]"
"""The single step of an attempt whose completion is blank (an Attempt needs at least one step)."""


CHARS_PER_TOKEN = 3.5
"""Characters per token of an estimated length (math-heavy English through a BPE tokenizer)."""


@dataclass(frozen=True)
class ModelOutput:
    """What a backend returned for one prompt: the text and why and after how many tokens it stopped;
    ``reasoning`` is the thinking when the server returned it apart (``reasoning_content``), and
    ``prompt`` the prompt text when known (it may have opened the thinking)."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int | None = None
    reasoning: str | None = None
    prompt: str | None = None


def estimate_tokens(text: str) -> int:
    """An estimate of ``text``'s length in tokens, from its characters (:data:`CHARS_PER_TOKEN`)."""
    return round(len(text) / CHARS_PER_TOKEN)


def split_output(output: ModelOutput, sections: SectionSettings = SectionSettings(),
                 thinking_tokens: int | None = None) -> tuple[Thinking | None, list[str], str | None]:
    """The thinking (None: there was none), the solution's steps and its final answer.

    >>> thinking, steps, answer = split_output(ModelOutput("<think>2+2 is 4</think>So \\\\boxed{4}"))
    >>> thinking.text, thinking.closed, steps, answer
    ('2+2 is 4', True, ['So \\\\boxed{4}'], '4')
    >>> split_output(ModelOutput("<think>2+2 is \\\\boxed{5}", "length"))[1:]
    (['[no solution: the thinking never ended]'], None)
    """
    split = split_thinking(output.text, prompt=output.prompt, reasoning=output.reasoning,
                           finish_reason=output.finish_reason)
    if split.thinking is None:
        return None, split_steps(output.text) or [EMPTY_OUTPUT], extract_final_answer(output.text)
    counted = thinking_tokens is not None
    thinking = Thinking(text=split.thinking, sections=split_sections(split.thinking, sections), closed=split.closed,
                        tokens=thinking_tokens if counted else estimate_tokens(split.thinking),
                        tokens_estimated=not counted, markers=split.markers)
    if not split.closed:
        return thinking, [NO_SOLUTION], None
    return thinking, split_steps(split.solution) or [EMPTY_OUTPUT], extract_final_answer(split.solution)


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


def reasoning_messages(problem: Problem, system: str | None = None) -> list[dict[str, str]]:
    """Chat messages for a reasoning model: the problem, its options if any, and :data:`REASONING_INSTRUCTION`.

    >>> reasoning_messages(Problem(text="1+1?"))[-1]["content"]
    '1+1?\\n\\nPlease reason step by step, and put your final answer within \\\\boxed{}.'
    """
    parts = [problem.text.strip()]
    if problem.choices:
        parts += ["\n".join(f"{chr(ord('A') + i)}. {c}" for i, c in enumerate(problem.choices)), CHOICE_INSTRUCTION]
    parts.append(REASONING_INSTRUCTION)
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": "\n\n".join(parts)}]


def trace_text(attempt: Attempt) -> str:
    """A reasoning model's whole answer as it wrote it: ``<think>`` thinking ``</think>`` then the solution
    (the solution alone for an attempt without thinking). The text of a DPO pair's chosen or rejected turn.

    >>> a = parse_completion(Problem(text="2+2?"), ModelOutput("<think>2+2 is 4</think>So \\\\boxed{4}"), model="m")
    >>> trace_text(a)
    '<think>\\n2+2 is 4\\n</think>\\n\\nSo \\\\boxed{4}'
    """
    solution = "\n\n".join(attempt.steps)
    if attempt.thinking is None:
        return solution
    opening = attempt.thinking.markers if (attempt.thinking.markers or "").startswith(("<", "◁")) else "<think>"
    closing = next((c for o, c in MARKERS if o == opening), "</think>")
    if not attempt.thinking.closed:
        return f"{opening}\n{attempt.thinking.text}"
    return f"{opening}\n{attempt.thinking.text}\n{closing}\n\n{solution}"


def render_prompt(tokenizer: Any, problem: Problem, system: str | None = None) -> str:
    """The prompt text through the tokenizer's own chat template, ready for the assistant's turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; the step prompt needs a chat model")
    return tokenizer.apply_chat_template(step_messages(problem, system), tokenize=False, add_generation_prompt=True)


def parse_completion(problem: Problem, completion: ModelOutput, *, model: str,
                     quantization: Quantization | None = None, sampling: Sampling = Sampling(),
                     source: str | None = None, sections: SectionSettings = SectionSettings()) -> Attempt:
    """An Attempt from one completion: its thinking (if any), steps, final answer, stop reason, length and
    provenance (see the module's docstring).

    >>> a = parse_completion(Problem(text="2+2?"), ModelOutput("Step 1: 2+2=4\\n\\nStep 2: \\\\boxed{4}", "stop", 9),
    ...                      model="m")
    >>> a.steps, a.final_answer, a.finish_reason
    (('Step 1: 2+2=4', 'Step 2: \\\\boxed{4}'), '4', 'stop')
    """
    thinking, steps, answer = split_output(completion, sections)
    return Attempt(problem=problem, steps=tuple(steps), final_answer=answer, thinking=thinking,
                   model=model, quantization=quantization, sampling=sampling,
                   finish_reason=completion.finish_reason, completion_tokens=completion.completion_tokens,
                   source=source)

"""The records every stage shares: problems, attempts (solutions split into steps) and verdicts.

Ids are content-derived (a short SHA-256 of canonical JSON), so the same content always gets the
same id on every machine and a rerun can recognise what it has already done.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def content_id(prefix: str, payload: Any, length: int = 16) -> str:
    """A stable id for ``payload``: ``prefix`` + the first ``length`` hex digits of its SHA-256.

    >>> content_id("p", {"text": "1+1?"})
    'p-ff6776698e2a0743'
    """
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return f"{prefix}-{hashlib.sha256(canonical.encode('utf-8')).hexdigest()[:length]}"


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Problem(_Record):
    """A math problem, with its reference answer and solution when known."""

    id: str = ""
    text: str = Field(min_length=1, description="The problem statement.")
    reference_answer: str | None = Field(None, description="The known final answer, if any.")
    reference_solution: str | None = Field(None, description="A known worked solution, if any.")
    source: str | None = Field(None, description="Benchmark or file the problem comes from, e.g. 'gsm8k'.")
    source_id: str | None = Field(None, description="The problem's id in its source, e.g. 'test/algebra/1.json'.")
    subject: str | None = None
    level: int | str | None = None
    choices: tuple[str, ...] | None = Field(None, description="Options of a multiple-choice problem (A, B, ...).")

    @model_validator(mode="after")
    def _derive_id(self) -> "Problem":
        if not self.id:
            object.__setattr__(self, "id", content_id("p", {"text": self.text, "source": self.source}))
        return self


class Quantization(_Record):
    """How a model's weights (and optionally activations / KV cache) were quantized."""

    method: str = Field(description="e.g. 'awq', 'gptq', 'w8a8', 'none'.")
    bits: int | None = None
    group_size: int | None = None
    tool: str | None = Field(None, description="e.g. 'llm-compressor 0.14', 'gptqmodel 7.6'.")
    format: str | None = Field(None, description="Checkpoint format, e.g. 'compressed-tensors'.")
    kv_cache_dtype: str | None = Field(None, description="KV-cache quantization, e.g. 'fp8', 'int4', 'int3'.")
    execution: Literal["real kernels", "simulated"] | None = Field(None, description=(
        "How the attempts were computed: the format's own low-bit kernels, or simulated (quantize-dequantize in "
        "a transformers forward pass). Set on attempts at generation; None when unknown (e.g. a served model)."))
    extra: dict[str, Any] = Field(default_factory=dict)


class Sampling(_Record):
    """The sampling settings an attempt was generated with."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    sample_index: int = 0
    extra: dict[str, Any] = Field(default_factory=dict)


class Section(_Record):
    """One section of a reasoning model's thinking: ``text[start:end]`` of :attr:`Thinking.text`."""

    start: int = Field(ge=0, description="Offset of the section's first character in the thinking text.")
    end: int = Field(ge=0, description="Offset just past the section's last character.")


class Thinking(_Record):
    """What a reasoning model wrote between ``<think>`` and ``</think>`` (or returned as
    ``reasoning_content``), segmented into sections that keep their offsets in the text.

    ``closed`` is False when the thinking never ended (cut at the token limit): such an attempt has
    no solution and no final answer, and is never graded from inside its thinking.
    """

    text: str = Field(description="The thinking, without its markers.")
    sections: tuple[Section, ...] = Field((), description="Sections in order; together they cover every "
                                                          "non-blank part of the text.")
    closed: bool = Field(True, description="Whether the thinking ended (its closing marker, or a separate "
                                           "reasoning_content field).")
    tokens: int | None = Field(None, ge=0, description="The thinking's length in tokens, when counted.")
    tokens_estimated: bool = Field(False, description="Whether ``tokens`` is an estimate from the characters "
                                                      "rather than a tokenizer's count.")
    markers: str | None = Field(None, description="The markers it was found between, e.g. '<think>', "
                                                  "'reasoning_content'.")

    @model_validator(mode="after")
    def _sections_in_order(self) -> "Thinking":
        previous = 0
        for i, section in enumerate(self.sections):
            if not previous <= section.start < section.end <= len(self.text):
                raise ValueError(f"section {i} ({section.start}-{section.end}) is out of order or outside the "
                                 f"thinking ({len(self.text)} characters)")
            previous = section.end
        return self

    @property
    def chars(self) -> int:
        return len(self.text)

    def section_text(self, index: int) -> str:
        section = self.sections[index]
        return self.text[section.start:section.end]

    @property
    def section_texts(self) -> tuple[str, ...]:
        return tuple(self.text[s.start:s.end] for s in self.sections)


class Attempt(_Record):
    """One model's step-by-step solution to a problem, with its provenance and correctness.

    A reasoning model's attempt also has its ``thinking``; ``steps`` are then the solution written
    after it (a single placeholder step when the thinking never ended: see :data:`NO_SOLUTION`).
    """

    id: str = ""
    problem: Problem
    steps: tuple[str, ...] = Field(min_length=1, description="The solution, one entry per step.")
    final_answer: str | None = Field(None, description="The answer the solution ends with, if extracted.")
    correct: bool | None = Field(None, description="Whether the final answer is right; None if ungraded.")
    model: str = Field("unknown", description="The model that wrote the solution.")
    quantization: Quantization | None = None
    sampling: Sampling = Field(default_factory=Sampling)
    finish_reason: str | None = Field(None, description="'stop', or 'length' when cut at the token limit.")
    label: int | None = Field(None, ge=-1, description="Human label of the first wrong step (-1: none), if known.")
    source: str | None = Field(None, description="Where the attempt was read from.")
    completion_tokens: int | None = Field(None, description="Tokens the model generated for this solution.")
    grading: str | None = Field(None, description="How correctness was decided, e.g. 'math-verify', "
                                                  "'ungradable: timeout'.")
    thinking: Thinking | None = Field(None, description="A reasoning model's thinking, apart from its solution.")
    solution_tokens: int | None = Field(None, ge=0, description="Tokens of the solution after the thinking, "
                                                                "when counted.")

    @field_validator("steps")
    @classmethod
    def _steps_not_blank(cls, steps: tuple[str, ...]) -> tuple[str, ...]:
        for i, step in enumerate(steps):
            if not step.strip():
                raise ValueError(f"step {i} is empty")
        return steps

    @model_validator(mode="after")
    def _derive_id(self) -> "Attempt":
        if not self.id:
            payload = {
                "problem": self.problem.id,
                "steps": list(self.steps),
                "model": self.model,
                "quantization": self.quantization.model_dump(mode="json") if self.quantization else None,
                "sample": self.sampling.sample_index,
            }
            if self.thinking is not None:  # only then: the ids of attempts without thinking stay as they were
                payload["thinking"] = self.thinking.text
            object.__setattr__(self, "id", content_id("a", payload))
        return self

    @property
    def solution_text(self) -> str:
        return "\n".join(self.steps)

    @property
    def truncated_thinking(self) -> bool:
        """Whether this is a reasoning model's attempt whose thinking never ended."""
        return self.thinking is not None and not self.thinking.closed


NO_SOLUTION = "[no solution: the thinking never ended]"
"""The single step of an attempt whose thinking was cut off before any solution was written."""


Status = Literal["ok", "unscored"]
JudgeScope = Literal["solution", "thinking", "both"]
Layer = Literal["judge", "checker", "rules"]
"""What decided a verdict: an LLM judge, the deterministic step checker, or the degenerate-output rules."""


class Usage(_Record):
    """Tokens spent on one or more calls."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(prompt_tokens=self.prompt_tokens + other.prompt_tokens,
                     completion_tokens=self.completion_tokens + other.completion_tokens)


class JudgeAnswer(_Record):
    """What one judge (one model, one sample) said about one attempt."""

    judge: str = Field(description="The judge's label (its model name, or model#sample).")
    model: str
    sample: int = 0
    status: Status
    reason: str | None = Field(None, description="Why the answer is unscored.")
    first_wrong_step: int | None = None
    first_wrong_section: int | None = Field(None, description="In a thinking window's answer: the first wrong "
                                                             "section of the thinking (-1: none), if judged.")
    category: str | None = None
    subtype: str | None = None
    explanation: str | None = None
    confidence: float | None = None
    raw_response: str | None = None
    tries: int = Field(1, description="Requests sent for this answer, retries included.")
    usage: Usage = Field(default_factory=Usage)


class Verdict(_Record):
    """The diagnosis of one failed attempt: where it first goes wrong and what kind of error it is.

    ``first_wrong_step`` is a 0-based index into ``attempt.steps``, or -1 when no step is wrong.
    With several judges the top-level fields hold the majority and ``judges`` keeps every answer.
    An ``unscored`` verdict (no valid answer) never counts as a diagnosis: its fields are None.

    A reasoning model's attempt can be judged over its thinking (``scope`` 'thinking' or 'both'):
    ``first_wrong_section`` is then a 0-based index into ``attempt.thinking.sections`` (-1: none
    wrong), and ``first_wrong_step`` the solution's first wrong step when the solution was judged
    too ('both'), None when it was not ('thinking').
    """

    id: str = ""
    attempt: Attempt
    status: Status
    reason: str | None = None
    first_wrong_step: int | None = Field(None, ge=-1)
    first_wrong_section: int | None = Field(None, ge=-1, description="The thinking's first wrong section "
                                                                     "(-1: none), when the thinking was judged.")
    scope: JudgeScope = Field("solution", description="What was judged: the solution, the thinking, or both.")
    category: str | None = None
    subtype: str | None = None
    explanation: str | None = None
    confidence: float | None = Field(None, ge=0, le=1)
    judge_model: str = Field(description="The judge model, 'a+b' for an ensemble, 'rules' for degenerate output.")
    raw_response: str | None = None
    judges: tuple[JudgeAnswer, ...] = ()
    agreement: float | None = Field(None, description="Share of scored judges that agree with the majority.")
    taxonomy: str = Field(description="The taxonomy used, 'name@version'.")
    config: str = Field("", description="Fingerprint of the judging configuration.")
    decided_by: Layer = Field("judge", description=(
        "The layer that decided: 'judge' (an LLM judge), 'checker' (the step checker's checked error, no "
        "earlier step found wrong), 'rules' (degenerate output)."))
    checked_step: int | None = Field(None, ge=0, description="The step checker's checked error: the first step "
                                                              "(0-based) with a false claimed computation.")
    checked_claim: str | None = Field(None, description="That step's false claim, e.g. '48 / 2 = 25 (true: 24)'.")
    conflict: bool = Field(False, description="The LLM verdict puts the first error after the checked error, or "
                                              "finds none: a human should look first.")

    @model_validator(mode="before")
    @classmethod
    def _rules_decided(cls, data: Any) -> Any:  # a verdict written before decided_by existed
        rules = isinstance(data, dict) and "decided_by" not in data and data.get("judge_model") == "rules"
        return {**data, "decided_by": "rules"} if rules else data

    @model_validator(mode="after")
    def _derive_id(self) -> "Verdict":
        if not self.id:
            object.__setattr__(self, "id", content_id("v", {"attempt": self.attempt.id, "config": self.config}))
        return self

    @property
    def is_diagnosis(self) -> bool:
        return self.status == "ok"


class JudgeClaim(_Record):
    """What the judge said about an attempt, as shown to the annotators."""

    model: str
    first_wrong_step: int | None = None
    category: str | None = None
    subtype: str | None = None
    confidence: float | None = None


class Review(_Record):
    """One annotator's submitted check of one verdict (from Argilla).

    ``first_wrong_step``, ``category`` and ``subtype`` are the annotator's own answers (-1 / "none":
    no wrong step); ``judge`` is the claim they were shown. ``sampling_weight`` is the inverse
    probability that the verdict was sent to humans (1 when every verdict was).
    """

    id: str = ""
    verdict_id: str
    annotator: str
    judge_correct: bool | None = Field(None, description='The answer to "is the judge right?".')
    first_wrong_step: int | None = Field(None, ge=-1)
    category: str | None = None
    subtype: str | None = None
    comment: str | None = None
    judge: JudgeClaim
    model: str | None = None
    quantization: str | None = None
    subject: str | None = None
    level: str | None = None
    sampling_weight: float = Field(1.0, gt=0)
    stratum: str | None = None
    submitted_at: str | None = None
    verdict: Verdict | None = Field(None, description="The full verdict, when pulled with the verdicts file.")

    @model_validator(mode="after")
    def _derive_id(self) -> "Review":
        if not self.id:
            object.__setattr__(self, "id", content_id("r", {"verdict": self.verdict_id, "annotator": self.annotator}))
        return self

    @property
    def accepts_step(self) -> bool:
        return self.first_wrong_step is not None and self.first_wrong_step == self.judge.first_wrong_step

    @property
    def accepts(self) -> bool:
        """The annotator's step and category are the judge's: the diagnosis stands."""
        return self.accepts_step and self.category == self.judge.category


class Message(_Record):
    """One chat message, as TRL's conversational datasets hold them."""

    role: Literal["system", "user", "assistant"]
    content: str


PairKind = Literal["solution", "step", "trace"]
ChosenSource = Literal["full-precision", "resample", "reference"]
DiagnosisSource = Literal["judge", "human-accepted", "human-corrected"]


class PreferencePair(_Record):
    """One DPO preference pair of the medicine, in TRL's conversational format, with its lineage.

    ``prompt`` is the problem in the generation format; ``rejected`` is the quantized model's failed
    solution and ``chosen`` a correct one. A ``step`` pair's two solutions share their first
    ``shared_prefix_steps`` steps (up to the first wrong step) and differ from there. A ``trace`` pair
    is a reasoning model's: the prompt is the reasoning prompt, both turns are whole traces
    (``<think>`` thinking ``</think>`` solution), and the thinking lengths of both sides are recorded.
    """

    id: str = ""
    prompt: tuple[Message, ...] = Field(min_length=1)
    chosen: tuple[Message, ...] = Field(min_length=1)
    rejected: tuple[Message, ...] = Field(min_length=1)
    kind: PairKind = "solution"
    shared_prefix_steps: int | None = Field(None, ge=0)
    problem_id: str
    problem_source: str | None = None
    problem_source_id: str | None = None
    category: str = Field(description="The error category the pair treats.")
    subtype: str | None = None
    first_wrong_step: int | None = Field(None, ge=0, description="0-based index of the rejected solution's first "
                                                                 "wrong step; None when only the thinking was judged.")
    first_wrong_section: int | None = Field(None, ge=0, description="0-based index of the rejected thinking's first "
                                                                    "wrong section, when the thinking was judged.")
    diagnosis_source: DiagnosisSource = "judge"
    verdict_id: str
    judge_model: str
    review_ids: tuple[str, ...] = ()
    rejected_attempt_id: str
    rejected_model: str
    rejected_quantization: str | None = None
    chosen_source: ChosenSource
    chosen_attempt_id: str | None = None
    chosen_model: str | None = None
    rejected_thinking_chars: int | None = Field(None, ge=0, description="Characters of the rejected thinking.")
    chosen_thinking_chars: int | None = Field(None, ge=0, description="Characters of the chosen thinking (None: none).")
    rejected_thinking_tokens: int | None = Field(None, ge=0, description="Tokens of the rejected thinking.")
    chosen_thinking_tokens: int | None = Field(None, ge=0, description="Tokens of the chosen thinking.")
    thinking_tokens_estimated: bool | None = Field(None, description="Whether a side's thinking tokens are estimated.")

    @model_validator(mode="after")
    def _diagnosed_somewhere(self) -> "PreferencePair":
        if self.first_wrong_step is None and self.first_wrong_section is None:
            raise ValueError("a pair needs the first wrong step or the first wrong section it treats")
        if self.kind == "trace" and self.rejected_thinking_chars is None:
            raise ValueError("a trace pair records its rejected thinking's length (rejected_thinking_chars)")
        return self

    @model_validator(mode="after")
    def _derive_id(self) -> "PreferencePair":
        if not self.id:
            payload = {"prompt": [m.model_dump() for m in self.prompt], "chosen": [m.model_dump() for m in self.chosen],
                       "rejected": [m.model_dump() for m in self.rejected]}
            object.__setattr__(self, "id", content_id("pp", payload))
        return self

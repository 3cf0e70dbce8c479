"""Validation of a judge's raw output: JSON parsing, JSON Schema, then semantic checks."""

from __future__ import annotations

import json
from dataclasses import dataclass

from jsonschema import Draft202012Validator

from quantmedic.taxonomy.model import NO_ERROR, Taxonomy


@dataclass(frozen=True)
class ParsedAnswer:
    """A judge answer that passed every check."""

    first_wrong_step: int
    category: str
    subtype: str
    explanation: str
    confidence: float


@dataclass(frozen=True)
class Invalid:
    """Why a judge answer was rejected; ``reason`` starts with a short code (``invalid_json: ...``)."""

    reason: str


def make_validator(schema: dict) -> Draft202012Validator:
    """A compiled validator for the judge's output schema (build it once per run)."""
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def validate_answer(content: str | None, finish_reason: str | None, n_steps: int, taxonomy: Taxonomy,
                    validator: Draft202012Validator) -> ParsedAnswer | Invalid:
    """Check one raw answer for an attempt with ``n_steps`` steps."""
    if finish_reason == "length":
        return Invalid("truncated: the answer hit the judge's token limit")
    if not content or not content.strip():
        return Invalid("empty: the judge returned no content")
    try:
        # llama.cpp's grammar lets raw newlines into strings: accept them (strict=False)
        data = json.loads(content, strict=False)
    except json.JSONDecodeError as exc:
        return Invalid(f"invalid_json: {exc.msg} at position {exc.pos}")
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.path])
    if errors:
        error = errors[0]
        where = ".".join(str(p) for p in error.path) or "<root>"
        return Invalid(f"schema: {where}: {error.message[:200]}")
    step, category, subtype = data["first_wrong_step"], data["category"], data["subtype"]
    if step >= n_steps:
        return Invalid(f"step_out_of_range: first_wrong_step {step} but the solution has steps 0 to {n_steps - 1}")
    if (step == -1) != (category == NO_ERROR) or (category == NO_ERROR) != (subtype == NO_ERROR):
        return Invalid(f'inconsistent: first_wrong_step -1, category "{NO_ERROR}" and subtype "{NO_ERROR}" '
                       f"go together (got {step}, {category}, {subtype})")
    if category != NO_ERROR and taxonomy.parent_of(subtype) != category:
        return Invalid(f'subtype_mismatch: subtype "{subtype}" belongs to "{taxonomy.parent_of(subtype)}", '
                       f'not "{category}"')
    return ParsedAnswer(step, category, subtype, data["explanation"].strip(), float(data["confidence"]))

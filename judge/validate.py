"""Validation of a judge's raw output: JSON parsing, JSON Schema, then semantic checks.

JSON Schema is not the last word: Python's ``json`` reads ``NaN`` and ``Infinity``, which no JSON
Schema bound rejects (``NaN`` compares false with everything) and which no record can hold, so
they are refused while parsing, and the confidence must be a finite number in [0, 1]. Text with
lone surrogates (from ``\\ud800``-style escapes) is repaired with U+FFFD, since no file or
database can store it. Whatever passes here is a value the records accept.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from jsonschema import Draft202012Validator

from quantmedic.taxonomy.model import NO_ERROR, Taxonomy

from .cache import scrub


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


class _NotJsonNumber(ValueError):
    pass


def _refuse_constant(name: str) -> float:
    raise _NotJsonNumber(name)


def validate_answer(content: str | None, finish_reason: str | None, n_steps: int, taxonomy: Taxonomy,
                    validator: Draft202012Validator) -> ParsedAnswer | Invalid:
    """Check one raw answer for an attempt with ``n_steps`` steps."""
    return _checked(content, finish_reason, taxonomy, validator, "first_wrong_step", range(n_steps))


def validate_window_answer(content: str | None, finish_reason: str | None, sections: range, taxonomy: Taxonomy,
                           validator: Draft202012Validator) -> ParsedAnswer | Invalid:
    """Check one raw answer about the window of a thinking that judged ``sections``: the section it names
    must be one of them, or -1 (its ``first_wrong_step`` holds the section)."""
    return _checked(content, finish_reason, taxonomy, validator, "first_wrong_section", sections)


def _checked(content: str | None, finish_reason: str | None, taxonomy: Taxonomy, validator: Draft202012Validator,
             key: str, allowed: range) -> ParsedAnswer | Invalid:
    if finish_reason == "length":
        return Invalid("truncated: the answer hit the judge's token limit")
    if not content or not content.strip():
        return Invalid("empty: the judge returned no content")
    try:
        # llama.cpp's grammar lets raw newlines into strings: accept them (strict=False)
        data = json.loads(content, strict=False, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        return Invalid(f"invalid_json: {exc.msg} at position {exc.pos}")
    except _NotJsonNumber as exc:
        return Invalid(f"invalid_json: {exc} is not a JSON number")
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.path])
    if errors:
        error = errors[0]
        where = ".".join(str(p) for p in error.path) or "<root>"
        return Invalid(f"schema: {where}: {error.message[:200]}")
    step, category, subtype, confidence = data[key], data["category"], data["subtype"], data["confidence"]
    if not math.isfinite(confidence) or not 0 <= confidence <= 1:
        return Invalid(f"schema: confidence: {confidence} is not a number from 0 to 1")
    step = int(step)  # JSON Schema's integer admits 2.0
    if step != -1 and step not in allowed:
        if key == "first_wrong_step":
            return Invalid(f"step_out_of_range: first_wrong_step {step} but the solution has steps 0 to "
                           f"{allowed.stop - 1}")
        return Invalid(f"section_out_of_range: first_wrong_section {step} but this window judges sections "
                       f"{allowed.start} to {allowed.stop - 1} (or -1: none of them is wrong)")
    if (step == -1) != (category == NO_ERROR) or (category == NO_ERROR) != (subtype == NO_ERROR):
        return Invalid(f'inconsistent: {key} -1, category "{NO_ERROR}" and subtype "{NO_ERROR}" '
                       f"go together (got {step}, {category}, {subtype})")
    if category != NO_ERROR and taxonomy.parent_of(subtype) != category:
        return Invalid(f'subtype_mismatch: subtype "{subtype}" belongs to "{taxonomy.parent_of(subtype)}", '
                       f'not "{category}"')
    return ParsedAnswer(step, category, subtype, scrub(data["explanation"]).strip(), float(confidence))

"""A verdict judged over a reasoning model's thinking shows annotators the section the judge named."""

from __future__ import annotations

import json

from quantmedic.annotate.settings import SECTION_QUOTE_CHARS, as_markdown_math, record_fields, record_suggestions
from quantmedic.judge.step_format import ModelOutput, parse_completion
from quantmedic.pipelines.data import shipped_path
from quantmedic.taxonomy.records import Problem, Verdict


def _trace_verdict(section: int | None, step: int | None = None) -> Verdict:
    record = next(r for r in json.loads(shipped_path("r1-kv3-math500-traces").read_text())
                  if "</think>" in r["generated_text"])
    attempt = parse_completion(Problem(text="the problem"), ModelOutput(record["generated_text"],
                                                                        prompt=record["full_prompt"]), model="r1")
    return Verdict(attempt=attempt, status="ok", first_wrong_section=section, first_wrong_step=step,
                   scope="thinking" if step is None else "both", category="execution",
                   subtype="computational_error", explanation="wrong", judge_model="j", taxonomy="t@1")


def test_the_named_section_is_quoted_and_the_step_question_left_to_the_annotator():
    verdict = _trace_verdict(2)
    thinking = verdict.attempt.thinking
    claim = record_fields(verdict)["judge_explanation"]
    assert f"section 2 of {len(thinking.sections)} of the thinking" in claim
    assert as_markdown_math(thinking.section_text(2)[:SECTION_QUOTE_CHARS]) in claim
    assert len(claim) < SECTION_QUOTE_CHARS + 1000
    assert record_suggestions(verdict)["first_wrong_step"] is None  # the thinking-only judge named no step


def test_scope_both_names_the_section_and_the_solution_step():
    claim = record_fields(_trace_verdict(-1, 0))["judge_explanation"]
    assert "no wrong section in the thinking; in the solution: step 0" in claim
    assert "The section of the thinking it names" not in claim

"""Reasoning traces in, graded: lighteval's details records (the shipped 100 real traces of
DeepSeek-R1-Distill-Qwen-1.5B with a 3-bit KV cache on MATH-500), the thinking/solution split, the truncated
ones, the sections, the grades against lighteval's own labels (real math-verify, the real command line), the
thinking fields of JSONL inputs, and bad traces.

Expectations are computed from the raw records (``str.partition`` on ``</think>``, the shipped MATH-500 file
through ``load_benchmark``), never copied from the code under test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from quantmedic.judge.adapters import load_attempts
from quantmedic.judge.answers import last_boxed
from quantmedic.judge.degenerate import TRUNCATED, detect_degenerate
from quantmedic.judge.lighteval import problem_text
from quantmedic.judge.sections import SectionSettings
from quantmedic.judge.step_format import REASONING_INSTRUCTION
from quantmedic.judge.thinking import MARKERS
from quantmedic.pipelines.data import shipped_path
from quantmedic.pipelines.evaluation.benchmarks import load_benchmark
from quantmedic.pipelines.evaluation.grading import (MATH_VERIFY, THINKING_NEVER_ENDED, agreement,
                                                     grade_attempts)
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import read_records, write_records
from quantmedic.taxonomy.records import NO_SOLUTION, Attempt, content_id

from .test_bad_input import run_main

TRACES = shipped_path("r1-kv3-math500-traces")
RAW = json.loads(TRACES.read_text(encoding="utf-8"))
ALL_MARKERS = [m for pair in MARKERS for m in pair]


@pytest.fixture(scope="module")
def attempts() -> list[Attempt]:
    return load_attempts(TRACES)


@pytest.fixture(scope="module")
def graded(attempts) -> list[Attempt]:
    return grade_attempts(attempts, workers=2, timeout=20)


def write_lighteval(path, records) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


# --- ingestion ---------------------------------------------------------------------------------------

def test_all_100_traces_become_math500_attempts_with_lightevals_labels(attempts):
    assert len(RAW) == 100 and len(attempts) == 100
    math500 = {p.text: p for p in load_benchmark("math500")}
    for record, attempt in zip(RAW, attempts):
        asked = record["full_prompt"].split("<｜User｜>")[1].split("<｜Assistant｜>")[0]
        assert " ".join(asked.strip().removesuffix(REASONING_INSTRUCTION).split()) == " ".join(attempt.problem.text.split())
        assert REASONING_INSTRUCTION not in attempt.problem.text and "<｜" not in attempt.problem.text
        assert attempt.problem == math500[attempt.problem.text]  # same id, source_id, subject, level and answer
        assert attempt.problem.reference_answer == last_boxed(record["gold"][0])
        assert attempt.problem.reference_solution == record["gold"][0]
        assert attempt.correct is (record["metrics"]["extractive_match"] == 1.0)
        assert attempt.grading == "lighteval:extractive_match"
    assert len({a.id for a in attempts}) == 100
    assert sum(a.correct for a in attempts) == sum(r["metrics"]["extractive_match"] for r in RAW)


def test_thinking_is_split_from_the_solution_and_the_answer_is_the_solutions(attempts):
    answers_from_inside = 0
    for record, attempt in zip(RAW, attempts):
        text = record["generated_text"]
        assert attempt.thinking is not None and attempt.thinking.markers == "<think>"
        for part in (attempt.thinking.text, *attempt.steps):
            assert not any(m in part for m in ALL_MARKERS)
        if "</think>" not in text:
            continue
        inside, _, solution = text.partition("</think>")
        assert attempt.thinking.closed and attempt.thinking.text == inside.strip()
        assert " ".join("\n".join(attempt.steps).split()) == " ".join(solution.split())
        assert attempt.final_answer == last_boxed(solution)
        answers_from_inside += last_boxed(inside) not in (None, last_boxed(solution))
    assert answers_from_inside >= 1  # a trace whose thinking boxed another answer than its solution


def test_the_13_unended_thinkings_are_truncated_with_no_solution(attempts):
    unended = [i for i, r in enumerate(RAW) if "</think>" not in r["generated_text"]]
    assert len(unended) == 13
    assert [i for i, a in enumerate(attempts) if a.truncated_thinking] == unended
    for i, attempt in enumerate(attempts):
        degenerate = detect_degenerate(attempt)
        if i in unended:
            assert degenerate is not None and degenerate.kind == TRUNCATED
            assert attempt.steps == (NO_SOLUTION,) and attempt.final_answer is None
            assert attempt.finish_reason == "length"
            assert attempt.thinking.text == RAW[i]["generated_text"].strip()
        else:
            assert degenerate is None or degenerate.kind != TRUNCATED


def test_sections_stay_within_their_bounds_and_cover_the_thinking(attempts):
    s = SectionSettings()
    for attempt in attempts:
        t = attempt.thinking
        assert 1 <= len(t.sections) <= s.max_sections
        position = 0
        for section in t.sections:
            assert section.start >= position and not t.text[position:section.start].strip()
            assert t.text[section.start].strip() and t.text[section.end - 1].strip()
            position = section.end
        assert not t.text[position:].strip()
        sizes = [x.end - x.start for x in t.sections]
        if len(t.text) <= s.max_sections * s.max_section_chars:
            assert max(sizes) <= s.max_section_chars
        for i, size in enumerate(sizes):  # a short section is one no neighbour could take in
            if size < s.min_section_chars and len(sizes) > 1:
                for j in (i - 1, i + 1):
                    if 0 <= j < len(sizes):
                        a, b = t.sections[min(i, j)].start, t.sections[max(i, j)].end
                        assert b - a > s.max_section_chars


def test_lightevals_other_layouts_give_the_same_attempts(tmp_path, attempts):
    records = RAW[:3]
    old = [{"example": "", "full_prompt": r["full_prompt"], "predictions": [r["generated_text"]], "gold": r["gold"],
            "metrics": r["metrics"], "specifics": {}} for r in records]
    new = [{"doc": {"query": r["full_prompt"], "choices": r["gold"], "gold_index": 0, "specific": None},
            "model_response": {"input": r["full_prompt"], "text": [r["generated_text"]]}, "metric": r["metrics"]}
           for r in records]
    for layout in (old, new):
        write_lighteval(tmp_path / "d.jsonl", layout)
        loaded = load_attempts(tmp_path / "d.jsonl")
        assert [a.id for a in loaded] == [a.id for a in attempts[:3]]
        assert [a.correct for a in loaded] == [a.correct for a in attempts[:3]]


def test_several_generations_per_record_are_samples_without_a_shared_label(tmp_path, attempts):
    r = RAW[1]
    write_lighteval(tmp_path / "d.jsonl", [{**r, "generated_text": [r["generated_text"], RAW[2]["generated_text"]]}])
    loaded = load_attempts(tmp_path / "d.jsonl", "lighteval")
    assert [a.sampling.sample_index for a in loaded] == [0, 1]
    assert loaded[0].steps == attempts[1].steps and loaded[1].steps == attempts[2].steps
    assert [a.correct for a in loaded] == [None, None]


def test_problem_text_leaves_out_the_chat_templates():
    llama = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is $2^5$?\n\n"
             f"{REASONING_INSTRUCTION}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    chatml = f"<|im_start|>user\nWhat is $2^5$?\n{REASONING_INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n<think>\n"
    assert problem_text(llama) == problem_text(chatml) == problem_text("<s>What is $2^5$?") == "What is $2^5$?"


# --- grading -------------------------------------------------------------------------------------------

def test_grades_agree_with_lightevals_labels(attempts, graded):
    result = agreement(attempts, graded)
    assert result.total == 100 and result.rate >= 0.98, result.disagreements
    assert result.interval.low <= result.rate <= result.interval.high
    for attempt, grade in zip(attempts, graded):
        if attempt.truncated_thinking:
            assert grade.correct is False and grade.grading == THINKING_NEVER_ENDED and grade.final_answer is None
        else:
            assert grade.grading == MATH_VERIFY and grade.final_answer and grade.final_answer in attempt.final_answer


def test_an_answer_inside_the_thinking_is_never_graded(tmp_path, attempts, graded):
    """Real traces, each with the reference answer boxed inside the thinking: still wrong."""
    cut = next(i for i, a in enumerate(attempts) if a.truncated_thinking)
    wrong = next(i for i, g in enumerate(graded) if g.correct is False and not attempts[i].truncated_thinking)
    boxed = {i: f"\n\nSo the answer is \\boxed{{{attempts[i].problem.reference_answer}}}.\n\n" for i in (cut, wrong)}
    records = [{**RAW[cut], "generated_text": RAW[cut]["generated_text"] + boxed[cut]},
               {**RAW[wrong], "generated_text": boxed[wrong] + RAW[wrong]["generated_text"]}]
    write_lighteval(tmp_path / "d.jsonl", records)
    regraded = grade_attempts(load_attempts(tmp_path / "d.jsonl"), workers=1, timeout=20)
    assert [g.correct for g in regraded] == [False, False]
    assert regraded[0].grading == THINKING_NEVER_ENDED
    assert regraded[1].final_answer == graded[wrong].final_answer


def test_the_real_command_grades_the_shipped_traces_and_checks_the_labels(tmp_path):
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "quantmedic.pipelines.cli", "grade", "r1-kv3-math500-traces",
                             "--out", str(tmp_path / "g.jsonl"), "--check-labels", "--timeout", "20"],
                            capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=300)
    assert result.returncode == 0, result.stderr
    found = re.search(r"agreement with the input's labels: (\d+)/(\d+) \(([\d.]+)% \[95% Wilson", result.stderr)
    assert found and int(found.group(2)) == 100 and int(found.group(1)) >= 98, result.stderr
    out = read_records(tmp_path / "g.jsonl", Attempt)
    assert len(out) == 100 and sum(a.grading == THINKING_NEVER_ENDED for a in out) == 13
    assert time.monotonic() - started < 240


def test_check_labels_lists_every_disagreement(tmp_path, monkeypatch, attempts):
    records = [dict(r) for r in RAW[:4]]
    flipped = next(i for i, a in enumerate(attempts[:4]) if a.correct)
    records[flipped]["metrics"] = {"extractive_match": 0.0}
    write_lighteval(tmp_path / "d.jsonl", records)
    monkeypatch.setenv("COLUMNS", "400")
    code, _, err = run_main(("grade", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "g.jsonl"), "--check-labels"))
    assert code == 0, err
    assert "agreement with the input's labels: 3/4" in err and "1 disagreements" in err
    assert attempts[flipped].id in err and attempts[flipped].problem.source_id in err
    assert "lighteval:extractive_match" in err


# --- other inputs with thinking, old files ------------------------------------------------------------

def test_jsonl_thinking_fields_become_the_thinking(tmp_path):
    base = {"problem": "What is 2+2?", "answer": "4"}
    rows = [{**base, "solution": "So \\boxed{4}.", "reasoning_content": "2+2 is 4.\n\nWait, yes."},
            {**base, "response": "So \\boxed{4}.", "thinking": "2+2 is 4."},
            {**base, "solution": "<think>\n2+2 is \\boxed{5}?\n</think>\n\nSo \\boxed{4}."}]
    write_lighteval(tmp_path / "t.jsonl", rows)
    loaded = load_attempts(tmp_path / "t.jsonl")
    assert [a.thinking.markers for a in loaded] == ["reasoning_content", "reasoning_content", "<think>"]
    assert [a.steps for a in loaded] == [("So \\boxed{4}.",)] * 3 and [a.final_answer for a in loaded] == ["4"] * 3
    mine = {"problem": {"text": "What is 2+2?"}, "steps": ["So \\boxed{4}."], "model": "m"}
    write_lighteval(tmp_path / "q.jsonl", [mine, {**mine, "reasoning": "2+2 is 4."}])
    plain, thought = load_attempts(tmp_path / "q.jsonl")
    assert plain.thinking is None and thought.thinking.text == "2+2 is 4." and plain.id != thought.id


def test_old_attempt_files_without_thinking_load_with_the_same_ids(tmp_path):
    old = load_attempts(shipped_path("gsm8k-solutions"))[:20]
    write_records(tmp_path / "old.jsonl", old)
    again = load_attempts(tmp_path / "old.jsonl")
    assert [a.id for a in again] == [a.id for a in old] and all(a.thinking is None for a in again)
    for a in again:  # the id of an attempt without thinking is derived as it always was
        payload = {"problem": a.problem.id, "steps": list(a.steps), "model": a.model, "quantization": None,
                   "sample": a.sampling.sample_index}
        assert a.id == content_id("a", payload)


# --- bad traces ----------------------------------------------------------------------------------------

R1_PROMPT = RAW[0]["full_prompt"]


@pytest.mark.parametrize("text, thinking, steps, answer", [
    ("so 4</think>\n\nThe answer is \\boxed{4}.</think>", "so 4", ("The answer is \\boxed{4}.",), "4"),
    ("a <think>b \\boxed{5}</think> c</think>\n\nSo \\boxed{4}", "a <think>b \\boxed{5}</think> c", ("So \\boxed{4}",), "4"),
    ("\n\n</think>\n\nSo \\boxed{4}", "", ("So \\boxed{4}",), "4"),
    ("<think>\nHmm, 4.\n</think>\n\nSo \\boxed{4}", "Hmm, 4.", ("So \\boxed{4}",), "4"),
], ids=["stray-closing", "nested", "empty-thinking", "repeated-opening"])
def test_odd_traces_give_a_clear_split(tmp_path, text, thinking, steps, answer):
    write_lighteval(tmp_path / "d.jsonl", [{**RAW[0], "generated_text": text}])
    (attempt,) = load_attempts(tmp_path / "d.jsonl")
    assert attempt.thinking.closed and attempt.thinking.text == thinking
    assert attempt.steps == steps and attempt.final_answer == answer and attempt.finish_reason is None


def test_a_5_mb_trace_is_split_quickly_within_the_bounds(tmp_path):
    body = ("Let me compute 2+2 again, carefully. " * 30 + "\n\nWait, " + "x" * 300 + "\n\n") * 4000
    write_lighteval(tmp_path / "d.jsonl", [{**RAW[0], "generated_text": body}, {**RAW[0], "generated_text":
                                           body + "</think>\n\nSo \\boxed{-\\sqrt{3}}"}])
    assert (tmp_path / "d.jsonl").stat().st_size > 10_000_000
    started = time.monotonic()
    cut, done = load_attempts(tmp_path / "d.jsonl")
    assert time.monotonic() - started < 30
    assert cut.truncated_thinking and detect_degenerate(cut).kind == TRUNCATED
    assert done.final_answer == "-\\sqrt{3}" and len(done.thinking.sections) == SectionSettings().max_sections
    (grade,) = grade_attempts([done], workers=1, timeout=20)
    assert grade.correct is True


@pytest.mark.parametrize("record, field", [
    ({k: v for k, v in RAW[0].items() if k != "generated_text"}, "generated_text"),
    ({**RAW[0], "generated_text": 7}, "generated_text"),
    ({**RAW[0], "generated_text": []}, "generated_text"),
    ({**RAW[0], "metrics": [1.0]}, "metrics"),
    ({**RAW[0], "full_prompt": "<｜User｜><｜Assistant｜><think>\n"}, "full_prompt"),
    ({"doc": {"query": "2+2?"}, "model_response": {"input": "2+2?"}}, "model_response.text"),
])
def test_a_bad_lighteval_record_is_one_line_naming_file_line_and_field(tmp_path, record, field):
    path = tmp_path / "d.jsonl"
    write_lighteval(path, [RAW[1], record])
    with pytest.raises(InputError) as error:
        load_attempts(path)
    assert (error.value.line, error.value.field) == (2, field)
    code, out, err = run_main(("grade", str(path), "--out", str(tmp_path / "g.jsonl")))
    assert code == 1 and out == "" and "Traceback" not in err
    assert err.strip().splitlines() == [f'error: {path}:2: field "{field}": {error.value.message}']
    assert not (tmp_path / "g.jsonl").exists()

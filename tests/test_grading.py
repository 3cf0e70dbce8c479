"""Grading: extraction, math-verify in the process pool, hangs and crashes, the agreement with the
GSM8K authors' labels, and the ``grade`` command.

The hang is real: math-verify comparing ``9^{9^{9}}`` with 5 does not return (its own
``signal.alarm`` timeout is off in the pool). Crashes and exceptions are injected through the
grader's ``check`` argument with the module-level functions below (test-only hooks run in the real
worker processes).
"""

from __future__ import annotations

import doctest
import json
import os
import time

import pytest

from quantmedic.judge.adapters import load_attempts
from quantmedic.pipelines.data import shipped_path
from quantmedic.pipelines.evaluation import grading
from quantmedic.pipelines.evaluation.benchmarks import load_benchmark
from quantmedic.pipelines.evaluation.grading import (CHOICE, LAST_EXPRESSION, MATH_VERIFY, NO_ANSWER, NO_REFERENCE,
                                                     TIMEOUT, Grade, GradeItem, agreement, check_gsm8k, extract_choice,
                                                     grade_attempts, grade_file, grade_item, grade_items)
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import read_records, write_records
from quantmedic.taxonomy.records import Attempt, Problem

HANG = r"so the answer is $\boxed{9^{9^{9}}}$"
CRASH_MARKER = "CRASH-THIS-WORKER"
RAISE_MARKER = "RAISE-IN-CHECK"


def crash_or_raise(item: GradeItem) -> Grade:
    """Test hook run in the workers: dies or raises on marked solutions, else grades normally."""
    if CRASH_MARKER in item.solution:
        os._exit(3)
    if RAISE_MARKER in item.solution:
        raise ValueError("injected failure")
    return grade_item(item)


def attempt(solution: str, reference: str | None = "5", choices=None, text: str = "What is 2+3?") -> Attempt:
    problem = Problem(text=text, reference_answer=reference, choices=choices)
    return Attempt(problem=problem, steps=tuple(solution.split("\n")))


@pytest.fixture(scope="module")
def gsm8k_agreement():
    return check_gsm8k(workers=2, timeout=10.0)


def test_grader_agrees_with_the_gsm8k_authors_on_at_least_99_percent(gsm8k_agreement):
    # measured: 2638 / 2638 (100%), no disagreements
    assert gsm8k_agreement.total == 2638
    assert gsm8k_agreement.rate >= 0.99, gsm8k_agreement.disagreements[:10]
    assert len(gsm8k_agreement.disagreements) == gsm8k_agreement.total - gsm8k_agreement.agreeing


def test_agreement_reports_each_disagreement():
    labelled = load_attempts(shipped_path("gsm8k-solutions"))[:6]
    graded = grade_attempts(labelled, workers=1)
    assert agreement(labelled, graded).disagreements == ()
    flipped = [labelled[0].model_copy(update={"correct": not labelled[0].correct}), *labelled[1:]]
    result = agreement(flipped, graded)
    assert (result.total, result.agreeing) == (6, 5)
    (d,) = result.disagreements
    assert (d.attempt_id, d.expected, d.got, d.final_answer, d.reference_answer) == (
        labelled[0].id, True, False, "26", "18")
    with pytest.raises(ValueError, match="paired"):
        agreement(labelled[:2], graded[1:3])


def test_grades_reference_solutions_of_math500_right_and_mismatched_ones_wrong():
    problems = load_benchmark("math500")
    own = [Attempt(problem=p, steps=(p.reference_solution,)) for p in problems]
    graded = grade_attempts(own, workers=2)
    assert sum(a.correct is True for a in graded) >= 495, [
        (a.problem.reference_answer, a.final_answer, a.grading) for a in graded if not a.correct][:10]
    # each solution checked against the next problem's answer: right only where the answers coincide
    shifted = [Attempt(problem=problems[(i + 1) % 100], steps=(p.reference_solution,))
               for i, p in enumerate(problems[:100])]
    wrong = grade_attempts(shifted, workers=2)
    assert sum(a.correct is True for a in wrong) <= 5
    assert all(a.grading == MATH_VERIFY for a in graded[:100] + wrong)


def test_hang_is_killed_marked_ungradable_and_the_run_goes_on():
    attempts = [attempt("2 + 3 = 5\nA: 5"), attempt(HANG), attempt("2 + 3 = 6\nA: 6"), attempt("#### 5")]
    seen = []
    start = time.monotonic()
    graded = grade_attempts(attempts, workers=1, timeout=1.0, progress=lambda done, total: seen.append((done, total)))
    assert time.monotonic() - start < 30
    assert [a.correct for a in graded] == [True, None, False, True]
    assert graded[1].grading == TIMEOUT and graded[1].final_answer == "9^{9^{9}}"  # extracted in the parent
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [a.id for a in graded] == [a.id for a in attempts]


def test_crash_and_exception_in_a_worker_are_ungradable_not_fatal():
    items = [GradeItem("A: 5", "5"), GradeItem(f"{CRASH_MARKER}\nA: 5", "5"), GradeItem("A: 4", "5"),
             GradeItem(f"{RAISE_MARKER}\nA: 5", "5"), GradeItem("A: 5", "5")]
    for workers in (1, 2):
        grades = grade_items(items, workers=workers, timeout=10.0, check=crash_or_raise)
        assert [g.correct for g in grades] == [True, None, False, None, True]
        assert grades[1].grading == "ungradable: worker crashed (exit code 3)"
        assert grades[3].grading == "ungradable: ValueError: injected failure"


def test_extraction_conventions_and_grading_notes():
    cases = [
        (attempt(r"We get $\boxed{\frac{10}{2}}$."), True, "\\frac{10}{2}", MATH_VERIFY),
        (attempt("So the final answer is 5."), True, "5", MATH_VERIFY),
        (attempt("She pays 2 + 3 dollars\n#### 5"), True, "5", MATH_VERIFY),
        (attempt("3 + 3 = 6\nA: 6"), False, "6", MATH_VERIFY),
        (attempt("**Answer:** it comes to 5 apples"), True, "5", LAST_EXPRESSION),
        (attempt("I do not know"), False, None, NO_ANSWER),
        (attempt("A: 5", reference=None), None, "5", NO_REFERENCE),
    ]
    graded = grade_attempts([a for a, *_ in cases], workers=2)
    assert [(g.correct, g.final_answer, g.grading) for g in graded] == [tuple(c[1:]) for c in cases]


def test_multiple_choice_is_graded_by_letter():
    options = ("4", "5", "6", "7")
    cases = [(r"Thus \boxed{B}.", True), (r"The answer is (B).", True), ("Answer: 5", True),
             (r"\boxed{\text{(C)}}", False), ("no idea at all", False)]
    graded = grade_attempts([attempt(s, reference="B", choices=options) for s, _ in cases], workers=1)
    assert [g.correct for g in graded] == [c for _, c in cases]
    assert [g.final_answer for g in graded] == ["B", "B", "B", "C", None]
    assert [g.grading for g in graded] == [CHOICE] * 4 + [NO_ANSWER]
    assert extract_choice("The answer is a prime number, 5", options) is None  # lower-case 'a' is no letter


def test_grade_file_grades_only_the_ungraded_attempts_in_place(tmp_path):
    from io import StringIO

    from rich.console import Console

    path = tmp_path / "attempts.jsonl"
    done = attempt("A: 7").model_copy(update={"correct": True, "grading": "by hand"})  # kept as it is
    write_records(path, [done, attempt("A: 5"), attempt("A: 6")])
    output = StringIO()
    grade_file(path, Console(file=output, width=200))
    graded = read_records(path, Attempt)
    assert [(a.correct, a.grading) for a in graded] == [(True, "by hand"), (True, MATH_VERIFY), (False, MATH_VERIFY)]
    assert output.getvalue().strip() == f"graded 2 attempts: 2 of 3 correct in {path}"
    before = path.stat().st_mtime_ns
    grade_file(path)  # nothing left to grade: the file is not rewritten
    assert path.stat().st_mtime_ns == before


def test_docstring_examples():
    result = doctest.testmod(grading)
    assert result.attempted > 0 and result.failed == 0


# --- the grade command ---------------------------------------------------------------------------



def test_grade_command_writes_graded_attempts_and_a_summary(eval_cli, tmp_path):
    src, out = tmp_path / "attempts.jsonl", tmp_path / "graded.jsonl"
    write_records(src, [attempt("A: 5"), attempt("A: 7"), attempt(HANG)])
    result = eval_cli("grade", src, "--out", out, "--workers", "1", "--timeout", "1")
    assert result.exit_code == 0, result.output
    graded = read_records(out, Attempt)
    assert [(a.correct, a.grading) for a in graded] == [(True, MATH_VERIFY), (False, MATH_VERIFY), (None, TIMEOUT)]
    assert "Grading summary" in result.output and "50.0% [9.5, 90.5]" in result.output
    assert "ungradable: 1 timeout" in result.output and "wrote 3 graded attempts" in result.output


def test_grade_command_errors(eval_cli, tmp_path):
    assert eval_cli("grade", "gsm8k-solutions").exit_code == 2  # no --out: a usage error
    assert eval_cli("grade").exit_code == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": {"text": "x"}, "steps": []}) + "\n")
    result = eval_cli("grade", bad, "--out", tmp_path / "o.jsonl")
    assert isinstance(result.exception, InputError) and result.exception.line == 1
    assert not (tmp_path / "o.jsonl").exists()


def test_grade_command_check_gsm8k_reports_the_agreement(eval_cli):
    result = eval_cli("grade", "--check-gsm8k")
    assert result.exit_code == 0, result.output
    assert "GSM8K agreement with the authors' is_correct labels: 2638/2638 (100.00%" in result.output
    assert "0 disagreements" in result.output


def test_a_reasoning_attempt_is_graded_on_its_solution_and_never_on_its_thinking():
    from quantmedic.judge.step_format import ModelOutput, parse_completion

    problem = Problem(text="What is 2+3?", reference_answer="5")
    outputs = [ModelOutput("<think>2+3 is \\boxed{5}</think>\n\nSo \\boxed{6}."),
               ModelOutput("<think>2+3 is \\boxed{6}</think>\n\nSo \\boxed{5}."),
               ModelOutput("<think>2+3 is 5, so \\boxed{5}", "length")]
    graded = grade_attempts([parse_completion(problem, o, model="r1") for o in outputs], workers=1)
    assert [(g.correct, g.final_answer, g.grading) for g in graded] == [
        (False, "6", MATH_VERIFY), (True, "5", MATH_VERIFY), (False, None, grading.THINKING_NEVER_ENDED)]
    assert grading.THINKING_NEVER_ENDED.startswith(NO_ANSWER)

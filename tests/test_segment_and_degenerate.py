from collections import Counter

import pytest

from quantmedic.judge.adapters import load_attempts
from quantmedic.judge.answers import extract_final_answer, last_boxed
from quantmedic.judge.degenerate import detect_degenerate
from quantmedic.judge.segment import split_steps
from quantmedic.taxonomy.records import Attempt, Problem

P = Problem(text="What is 6 * 7?")


def test_explicit_step_markers_win_over_lines_and_paragraphs():
    text = "Let us think.\n## Step 1: multiply\n6 * 7\n\n= 42\n## Step 2: answer\n\\boxed{42}"
    assert split_steps(text) == ["Let us think.", "## Step 1: multiply\n6 * 7\n\n= 42", "## Step 2: answer\n\\boxed{42}"]


def test_paragraphs_keep_display_math_whole():
    text = "We expand:\n\n$$\n(a+b)^2\n\n= a^2 + 2ab + b^2\n$$\n\nSo the answer is $\\boxed{1}$."
    assert split_steps(text) == ["We expand:", "$$\n(a+b)^2\n\n= a^2 + 2ab + b^2\n$$", "So the answer is $\\boxed{1}$."]


def test_lines_are_the_last_rule_and_blank_text_has_no_steps():
    assert split_steps("  a = 1\r\n\r\nb = 2  ") == ["a = 1", "b = 2"]
    assert split_steps("x = 1\ny = 2") == ["x = 1", "y = 2"]
    assert split_steps("one step only") == ["one step only"]
    assert split_steps(" \n\n ") == []


@pytest.mark.parametrize("text, answer", [
    ("so $\\boxed{\\frac{1}{2}}$ and more", "\\frac{1}{2}"),
    ("x\n#### 1,200", "1,200"),
    ("She pays 26\nA: 26", "26"),
    ("The final answer is 7.", "7"),
    ("We get \\boxed{3} then \\boxed{4}", "4"),
    ("no answer here", None),
    ("cut inside \\boxed{1 + ", None),
])
def test_final_answer_extraction(text, answer):
    assert extract_final_answer(text) == answer


def test_last_boxed_balances_braces():
    assert last_boxed("\\boxed{\\{1, 2\\} \\cup {3}}") == "\\{1, 2\\} \\cup {3}"


def test_repetition_loop_is_found_at_its_first_step():
    steps = ("6 * 7 = 42", "Then we check the product again.", "Then we check the product again.",
             "Then we check the product again.")
    found = detect_degenerate(Attempt(problem=P, steps=steps))
    assert (found.kind, found.step) == ("repetition_loop", 1)


def test_word_loop_inside_one_step():
    steps = ("6 * 7 = 42", "so the answer is " + "and then and then " * 30)
    assert detect_degenerate(Attempt(problem=P, steps=steps)).kind == "repetition_loop"


def test_truncated_and_no_final_answer():
    assert detect_degenerate(Attempt(problem=P, steps=("6 * 7 =", "A: 42"), finish_reason="length")).kind == "truncated"
    assert detect_degenerate(Attempt(problem=P, steps=("Let me think about it.", "Hmm, hard."))).kind == "no_final_answer"
    assert detect_degenerate(Attempt(problem=P, steps=("6 * 7 = 42", "A: 42"))) is None
    # a prose answer with the number is an answer
    assert detect_degenerate(Attempt(problem=P, steps=("Six sevens.", "So there are 42 apples."))) is None


def test_no_false_positives_on_real_solutions(gsm8k_solutions, processbench):
    for path in (gsm8k_solutions, processbench):
        flagged = Counter(d.kind for a in load_attempts(path) if (d := detect_degenerate(a)))
        assert flagged == Counter(), f"{path}: {flagged}"

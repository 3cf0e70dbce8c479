"""The deterministic step checker (``quantmedic.judge.checker``) and ``quantmedic check``: each claim kind true and
false, the precision tolerance, the conservative skips, the command end to end on real data, and the false-fire
rate on real solutions known to be right (the shipped GSM8K solutions graded correct, ProcessBench's all-correct
GSM8K items). Speed is a benchmark (``benchmarks/check_throughput.py``), not a test."""

from __future__ import annotations

import json

import pytest

from quantmedic.judge.adapters import load_attempts
from quantmedic.judge.check_job import CheckSettings, run_check
from quantmedic.judge.checker import Finding, check_steps, check_text, normalize
from quantmedic.pipelines.data import shipped_path
from quantmedic.taxonomy.jsonl import read_records

from .test_bad_input import run_main

TRUE_CLAIMS = [
    "He walks 20*5=100 miles during the week",
    "16-3=13 eggs",
    "So he has 23 + 16 = 39 minutes",
    "(60 * 4) / 5 = 240 / 5 = 48 lines",  # a chain
    "1,000 + 2,500 = 3,500",  # thousands separators
    "$100 * 10 = $1,000 a day",  # currency
    "He pays €2.50 * 4 = €10",
    "This is 100/1000 * 100 = 10.0% more.",  # a percentage written as p%
    "20% * 50 = 10",
    "1/2 = 50%",
    "3/4 + 1/4 = 1",  # fractions
    "0.25 * 84 = 21",  # decimals
    "2/3 = 0.67",  # rounded to the written precision
    "10/3 = 3.333",
    "100/3 ≈ 33.3",
    "10/3 ≈ 3",
    "1000/7 ≈ 140",
    r"\( \frac{31}{7} \approx 4.428 \)",  # after ≈ the last digit may be cut
    "33.33 * 3 = 100",  # a rounded intermediate
    r"\[ \frac{60}{2} = 30 \]",  # LaTeX
    r"\( 12 \cdot 3 = 36 \)",
    r"\[ 105 \times 500 = 52,500 \]",
    r"\[ 2^{10} = 1024 \]",
    r"\[ \sqrt{16} + 1 = 5 \]",
    r"\[ \sqrt{2} \cdot \sqrt{2} = 2 \]",
    r"\[ \frac{480 \text{ miles}}{60 \text{ miles/hour}} = 8 \text{ hours} \]",
    "2 × 3 = 6, then 8 ÷ 2 = 4",
    "100 x 2 = 200 guests",  # x between two numbers, no variable x in the step
    "5 * 2 = 10 + 3 = 13",  # a run-on chain
    "5 - 2 = 3 apples left",
    "1. 2 + 2 = 4",  # list numbering
    "10 − 4 = 6",
    "-3 + 5 = 2 is what we get: (-3) + 5 = 2",
    "He picked a total of 3/4*84 = 63 melons",  # "of" after a word for the whole
    "Savings = 20% of $100,000 = 0.20 * $100,000 = $20,000.",  # "of" after a percentage: its side is dropped
]

FALSE_CLAIMS = [  # (text, expression, claimed, true value)
    ("He walks 20*5=101 miles", "20*5", "101", "100"),
    ("1,000 + 2,500 = 3,600 dollars", "1,000 + 2,500", "3,600", "3500"),
    ("$220.00 – $210.00 = $20.00 more", "220.00 - 210.00", "20.00", "≈ 10"),
    ("That is 25/75 x 100% = 25%", "25/75 * 100%", "25%", "1/3 (≈ 0.333333)"),
    ("2/3 = 0.66", "2/3", "0.66", "2/3 (≈ 0.666667)"),
    ("7/2 = 3 boxes", "7/2", "3", "3.5"),
    (r"\[ \frac{500}{2} = 240 \]", "((500)/(2))", "240", "250"),
    (r"\[ 45 \times 250 = 11,000 \]", "45 * 250", "11,000", "11250"),
    (r"\[ \sqrt{81} = 8 \]", "√(81)", "8", "9"),
    ("2^3 = 9", "2^3", "9", "8"),
    ("5*2 = 11 + 3 = 14", "5*2", "11 + 3", "10"),
    ("10/3 ≈ 4", "10/3", "4", "10/3 (≈ 3.33333)"),
    ("He picked a total of 3/4*84 = 64 melons", "3/4*84", "64", "63"),
    ("12 + 3 = 15 = 16", "15", "16", None),  # bare = bare is no claim: only 12 + 3 = 15 is checked
    # real slips in GSM8K solutions graded correct (benchmarks/checker_accuracy.py): the step does claim them
    ("They have to leave earlier because 11 < 30 / 11 = 11", "30 / 11", "11", "30/11 (≈ 2.72727)"),
    ("Gerald and Julia received $100/ 3 + $100/2 = $100/5", "100/ 3 + 100/2", "100/5", "250/3 (≈ 83.3333)"),
    ("rounded down, 7/2 = 5 boxes", "7/2", "5", "3.5"),  # a step that rounds: an integer more than 1 off is false
    ("The whole deal: 250,000 + 75,000 + 6,000 = 265,000", "250,000 + 75,000 + 6,000", "265,000", "331000"),
]

SKIPPED = [  # ambiguous: never a finding, whatever the numbers say
    "x + 2 = 5",
    "3x + 2 = 11",
    "Let x be the cost: 3 x 4 = 13",
    "half of 10 = 5",
    "10% of 50 * 2 = 10",
    "It starts at 2:30 + 45 = 3:15",
    "The ratio 3:4 = 6:8",
    "It takes 3-4 hours",
    "On 2023-05-01 = day one",
    "The total is 2 million = 1,500,000 + 600,000",
    "She has 2,5 + 1 = 3,5 liters",
    "2(3 + 4) = 15",
    "a2 + 3 = 7",
    r"\[ \text{Alyana's Age} = \text{Chenny's Age} - 4 = 10 - 4 = 6 \]",
    "10 apples = 5",
    "n = 5 * 2 = 12k",
    "7/0 = 1",
    "Total 45 = 9 * 6",
    "5 / 3 = 1 remainder 2",
    "10/3 = 3 and 1/3",
    r"\( \cos(0) = 2 \)",  # a function
    "log 100 = 3",
    r"Thus \(8^8 = 9 \mod 11\)",  # modular arithmetic
    "7 = 2 mod 5",  # a bare number first: a word before it may be doing the arithmetic
    # a step that says it rounds: an integer within 1 is a floor or a ceiling (ProcessBench GSM8K, "Ram's pens")
    r"Converting these 36 empty pens into full pens: \( \frac{36}{5} = 7 \) full pens (with a remainder of 1, but "
    "we only count complete full pens).",
    "Rounded down, 7/2 = 3 boxes",
    "He needs 50/8 = 7 boxes, rounding up",
    "So 10/3 = 3 whole pizzas",
]


@pytest.mark.parametrize("text", TRUE_CLAIMS)
def test_true_claims_are_checked_and_hold(text):
    result = check_text(text)
    assert result.checked >= 1, (text, normalize(text))
    assert result.false == (), result.false


@pytest.mark.parametrize("text, expression, claimed, true", FALSE_CLAIMS)
def test_false_claims_name_the_expression_the_claim_and_the_true_value(text, expression, claimed, true):
    result = check_text(text)
    if true is None:
        assert result.false == () and result.checked == 1
        return
    assert len(result.false) == 1, (text, normalize(text), result)
    assert result.false[0] == (expression, "≈" if "≈" in text else "=", claimed, true)


@pytest.mark.parametrize("text", SKIPPED)
def test_ambiguous_lines_are_never_findings(text):
    assert check_text(text).false == ()


def test_the_tolerance_comes_from_the_precision_the_step_writes():
    assert check_text("1/8 = 0.125").false == ()
    assert check_text("1/8 = 0.13").false == ()  # 2 decimals: within 0.005
    assert check_text("1/8 = 0.12").false == ()  # |0.125 - 0.12| = 0.005: the boundary counts as right
    assert check_text("1/8 = 0.1").false == ()
    assert check_text("1/8 = 0.11").false != ()
    assert check_text("1/8 = 0.2").false != ()
    assert check_text("5/2 = 2").false != () and check_text("5/2 = 3").false != ()  # integers are exact
    assert check_text("5/2 ≈ 3").false == ()  # ≈ to an integer is rounded


def test_the_first_false_step_is_the_checked_error():
    checked = check_steps("a1", ("First 2 + 2 = 4.", "Then 4 * 3 = 13.", "Now 13 + 1 = 15.", "So x = 5"))
    assert checked.checked_error == 2
    assert [f.step for f in checked.findings] == [2, 3]
    assert [f.first_error for f in checked.findings] == [True, False]
    assert checked.claims_checked == 3 and checked.steps == 4
    assert checked.findings[0] == Finding(attempt_id="a1", step=2, expression="4 * 3", claimed="13", true="12",
                                          first_error=True)
    assert check_steps("a2", ("x + 1 = 3", "so x = 2")).checked_error is None


def _fired(attempts) -> list:
    return [a for a in attempts if check_steps(a.id, a.steps).checked_error is not None]


def test_false_fires_on_solutions_graded_correct_are_at_most_one_percent():
    correct = [a for a in load_attempts(shipped_path("gsm8k-solutions")) if a.correct]
    assert len(correct) == 1028
    assert len(_fired(correct)) <= 0.01 * len(correct)


def test_processbench_all_correct_rarely_fire_and_fires_on_errors_are_at_or_after_the_label():
    items = load_attempts(shipped_path("processbench-gsm8k"))
    all_correct = [a for a in items if a.label == -1]
    assert len(_fired(all_correct)) <= 0.01 * len(all_correct)
    wrong = [a for a in items if a.label is not None and a.label >= 0]
    fired = [(a, check_steps(a.id, a.steps).checked_error) for a in wrong]
    fired = [(a, step) for a, step in fired if step is not None]
    assert fired and sum(step - 1 >= a.label for a, step in fired) >= 0.97 * len(fired)


def test_the_command_end_to_end_on_real_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = run_main(("check", "processbench-gsm8k", "--out", "findings.jsonl", "--limit", "120"))
    assert code == 0, stderr
    findings = read_records(tmp_path / "findings.jsonl", Finding)
    assert findings and all(f.step >= 1 and f.claimed and f.true for f in findings)
    summary = run_check(shipped_path("processbench-gsm8k"), tmp_path / "again.jsonl", CheckSettings(limit=120))
    assert summary.attempts == 120 and summary.findings == len(findings)
    assert summary.with_error == len({f.attempt_id for f in findings}) == sum(f.first_error for f in findings)
    assert (tmp_path / "again.jsonl").read_bytes() == (tmp_path / "findings.jsonl").read_bytes()
    assert "attempts with a checked error" in stdout and f"{summary.steps:,}" in stdout
    assert f"wrote {len(findings)} findings" in stderr


def test_the_command_reads_every_input_format(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl").write_text(json.dumps({"problem": "What is 3*4?", "solution": "3*4 = 13\nSo 13."}) + "\n")
    code, _, stderr = run_main(("check", "in.jsonl", "--out", "f.jsonl", "--format", "text"))
    assert code == 0, stderr
    [finding] = read_records(tmp_path / "f.jsonl", Finding)
    assert (finding.step, finding.expression, finding.claimed, finding.true) == (1, "3*4", "13", "12")

"""The step checker against labels (``quantmedic.judge.checker_eval``): hand-built attempts whose every rate follows
from their steps and labels (0-based labels against 1-based checked steps, the label before the graded answer,
Wilson's intervals), and the real ProcessBench GSM8K split through ``quantmedic judge-eval``'s command line."""

from __future__ import annotations

import json
import math

import pytest

from quantmedic.judge.adapters import load_attempts
from quantmedic.judge.checker_eval import (CheckerEvaluation, Rate, evaluate_checker, from_json, is_erroneous,
                                           score_checked, to_json, to_markdown)
from quantmedic.judge.checker import check_steps
from quantmedic.pipelines.data import shipped_path
from quantmedic.taxonomy.records import Attempt, Problem

from .test_cli_judge import cli


def attempt(steps, label=None, correct=None, n=[0]) -> Attempt:
    n[0] += 1
    return Attempt(problem=Problem(text=f"problem {n[0]}", source_id=f"item-{n[0]}"), steps=tuple(steps),
                   label=label, correct=correct)


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson's 95% score interval, written out."""
    z, p = 1.959963984540054, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


EXACT = attempt(["2 + 2 = 4", "4 * 3 = 13", "13 + 1 = 14"], label=1)  # checked error step 2 = label 1 (0-based)
AFTER = attempt(["2 + 2 = 4", "We think.", "4 * 3 = 13"], label=1)  # step 3: one after the label
BEFORE = attempt(["2 + 2 = 5", "5 * 3 = 15"], label=1)  # step 1: before the label
SILENT = attempt(["We guess wrong.", "So 7 apples."], label=0)  # an error, no false arithmetic
CLEAN = attempt(["2 + 2 = 4"], label=-1)
FALSE_FIRE = attempt(["It is 3 * 3 = 10 in all."], label=-1)
GRADED_WRONG = attempt(["5 - 2 = 4"], correct=False)  # no label: the grade decides
GRADED_RIGHT = attempt(["5 - 2 = 3"], correct=True)
UNGRADED = attempt(["1 + 1 = 3"])  # neither: not counted
LABEL_FIRST = attempt(["1 + 1 = 2"], label=-1, correct=False)  # the human label wins over the grade
ALL = [EXACT, AFTER, BEFORE, SILENT, CLEAN, FALSE_FIRE, GRADED_WRONG, GRADED_RIGHT, UNGRADED, LABEL_FIRST]


def test_every_rate_of_hand_built_attempts():
    e = evaluate_checker(ALL)
    assert (e.attempts, e.erroneous, e.correct) == (10, 5, 4)  # erroneous: the 4 labelled >= 0 and GRADED_WRONG
    assert (e.fires_on_erroneous.hits, e.fires_on_erroneous.n) == (4, 5)  # SILENT does not fire
    assert (e.fires_on_correct.hits, e.fires_on_correct.n) == (1, 4)  # FALSE_FIRE; LABEL_FIRST counts as correct
    # of the 3 labelled erroneous attempts where it fires (GRADED_WRONG has no label): 1 exact, 2 at or after, 1 before
    assert [(r.hits, r.n) for r in (e.exact, e.at_or_after, e.before)] == [(1, 3), (2, 3), (1, 3)]
    assert e.at_or_after.value == pytest.approx(2 / 3) and e.fires_on_correct.value == 0.25
    for rate in (e.fires_on_erroneous, e.fires_on_correct, e.exact, e.at_or_after, e.before):
        assert (rate.low, rate.high) == pytest.approx(wilson(rate.hits, rate.n), abs=1e-12)
        assert rate.low <= rate.value <= rate.high
    assert [(m.kind, m.attempt_id, m.checked_error, m.label) for m in e.misfires] == [
        ("before_label", BEFORE.id, 1, 1), ("on_correct", FALSE_FIRE.id, 1, -1)]
    before = e.misfires[0]
    assert before.item == BEFORE.problem.source_id and before.text == "2 + 2 = 5"
    assert before.claim() == "2 + 2 = 5 (true: 4)"
    assert e.meets_targets is False


def test_the_label_is_zero_based_and_the_checked_step_one_based():
    first = attempt(["3 * 3 = 10", "10 + 1 = 11"], label=0)
    e = evaluate_checker([first])
    assert check_steps(first.id, first.steps).checked_error == 1
    assert (e.exact.hits, e.at_or_after.hits, e.before.hits, e.exact.n) == (1, 1, 0, 1) and not e.misfires
    late = attempt(["3 * 3 = 9", "9 + 1 = 10", "10 * 2 = 21"], label=1)  # a false claim after the labelled step
    e = evaluate_checker([late])
    assert (e.exact.hits, e.at_or_after.hits, e.before.hits) == (0, 1, 0)


def test_which_attempts_count_as_erroneous():
    assert [is_erroneous(a) for a in (EXACT, SILENT, CLEAN, GRADED_WRONG, GRADED_RIGHT, UNGRADED, LABEL_FIRST)] == [
        True, True, False, True, False, None, False]


def test_targets_empty_data_and_precomputed_results():
    empty = evaluate_checker([])
    assert empty.attempts == 0 and empty.meets_targets is None and not empty.misfires
    assert empty.exact == Rate(hits=0, n=0) and empty.exact.text() == "0/0"
    good = evaluate_checker([EXACT, AFTER, CLEAN] + [attempt(["1 + 1 = 2"], label=-1) for _ in range(99)])
    assert good.fires_on_correct == Rate.of(0, 100) and good.at_or_after.value == 1.0 and good.meets_targets is True
    one_false_fire = evaluate_checker([EXACT, FALSE_FIRE] + [attempt(["1 + 1 = 2"], label=-1) for _ in range(99)])
    assert one_false_fire.fires_on_correct.value == 0.01 and one_false_fire.meets_targets is True  # <= 1% holds
    assert evaluate_checker(ALL) == score_checked((a, check_steps(a.id, a.steps)) for a in ALL)


def test_json_round_trip_and_markdown():
    e = evaluate_checker(ALL)
    document = json.loads(json.dumps(to_json(e)))
    assert document["meets_targets"] is False and document["at_or_after"]["hits"] == 2
    assert document["misfires"][0]["finding"]["claimed"] == "5"
    assert from_json(document) == e and isinstance(from_json(document), CheckerEvaluation)
    text = to_markdown(e)
    assert "## Step checker" in text and "| fires on erroneous | 4/5 = 80.0% [" in text
    assert "| labelled fires: at or after the label (target >= 97%) | 2/3 = 66.7% [" in text
    assert f"| before_label | {BEFORE.problem.source_id} | 1 | 1 | `2 + 2 = 5 (true: 4)` |" in text
    short = to_markdown(e, max_misfires=1)
    assert "on_correct" not in short and "and 1 more misfires" in short


def test_judge_eval_reports_the_checker_on_the_real_processbench_split(faults, tmp_path):
    """All 400 items through ``quantmedic judge-eval``: its checker section is the checker's on the data itself."""
    out = tmp_path / "eval"
    result = cli("judge-eval", "processbench-gsm8k", "--base-url", faults.base_url, "-m", "say:-1:0.9",
                 "--out", out, "--cache", tmp_path / "c.sqlite", "--bootstrap", 200)
    assert result.returncode == 0, result.stderr
    expected = evaluate_checker(load_attempts(shipped_path("processbench-gsm8k")))
    metrics = json.loads((out / "metrics.json").read_text())
    assert from_json(metrics["checker"]) == expected
    checker = metrics["checker"]
    assert (checker["attempts"], checker["erroneous"], checker["correct"]) == (400, 207, 193)
    # the figures measured on this split (see benchmarks/README.md): both targets met
    assert (checker["fires_on_correct"]["hits"], checker["fires_on_erroneous"]["hits"]) == (0, 13)
    assert [checker[k]["hits"] for k in ("exact", "at_or_after", "before")] == [12, 13, 0]
    assert checker["at_or_after"]["n"] == 13 and checker["meets_targets"] is True and checker["misfires"] == []
    assert "## Step checker" in result.stdout and "| false fires on correct (target <= 1%) | 0/193 = 0.0% [0.0, 2.0] |" \
        in result.stdout
    assert "| ensemble |" not in result.stdout and "| say:-1:0.9 | 400 |" in result.stdout  # the judge's table too
    assert to_markdown(expected) in (out / "summary.md").read_text()

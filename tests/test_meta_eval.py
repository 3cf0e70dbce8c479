"""Meta-evaluation arithmetic on a fixture small enough to compute by hand."""

import pytest

from quantmedic.judge.meta_eval import evaluate, to_json, to_markdown
from quantmedic.taxonomy.records import Attempt, JudgeAnswer, Problem, Usage, Verdict

LABELS = [-1, -1, 0, 2, 1]
A = [(-1, 0.9), (1, 0.9), (0, 0.9), (1, 0.9), None]   # judge "a": (step, confidence), None = unscored
B = [(-1, 0.6), (-1, 0.6), (0, 0.6), (2, 0.6), (1, 0.6)]


def answer(judge, call):
    if call is None:
        return JudgeAnswer(judge=judge, model=judge, status="unscored", reason="invalid: x", tries=3,
                           usage=Usage(prompt_tokens=30, completion_tokens=3))
    step, confidence = call
    category, subtype = ("none", "none") if step == -1 else ("execution", "computational_error")
    return JudgeAnswer(judge=judge, model=judge, status="ok", first_wrong_step=step, category=category,
                       subtype=subtype, confidence=confidence, tries=1,
                       usage=Usage(prompt_tokens=10, completion_tokens=1))


def verdicts():
    from quantmedic.judge.ensemble import majority

    out = []
    for i, label in enumerate(LABELS):
        attempt = Attempt(problem=Problem(text=f"q{i}"), steps=("s0", "s1", "s2", "A: 1"), label=label)
        answers = (answer("a", A[i]), answer("b", B[i]))
        vote = majority(answers)
        out.append(Verdict(attempt=attempt, status="ok", first_wrong_step=vote.first_wrong_step,
                           category=vote.category, subtype=vote.subtype, confidence=vote.confidence,
                           judges=answers, judge_model="a+b", taxonomy="t@1"))
    return out


def test_scores_localization_agreement_and_calibration_by_hand():
    result = evaluate(verdicts(), n_resamples=500)
    a, b = result.judges
    # a: errors (labels 0, 2, 1) -> 0 right, 1 too early, unscored: 1/3; no-error -> -1 right, 1 wrong: 1/2
    # F1 = 2 * (1/3 * 1/2) / (1/3 + 1/2) = 0.4
    assert (a.processbench.scores.error_accuracy, a.processbench.scores.correct_accuracy) == (1 / 3, 1 / 2)
    assert a.processbench.scores.f1 == pytest.approx(0.4) and a.processbench.scores.n_unscored == 1
    assert (a.localization.exact, a.localization.too_early, a.localization.unscored) == (1, 1, 1)
    assert a.localization.false_alarms == 1 and a.requests == 4 + 3
    assert b.processbench.scores.f1 == 1.0
    # ensemble ties (a 0.9 vs b 0.6) go to a: items 1 and 3 wrong; item 4 b alone -> right
    # error 2/3, correct 1/2, F1 = (2/3) / (7/6) = 4/7
    assert result.ensemble.processbench.scores.f1 == pytest.approx(4 / 7)
    # kappa on the step over items 0-3: po = 2/4, pe = 2/16 + 1/16 = 3/16 -> (0.5 - 0.1875) / 0.8125
    (pair,) = result.agreement
    assert pair.n_items == 4 and pair.kappa_step == pytest.approx(0.3125 / 0.8125)
    # on error / no error: po = 3/4, pe = 3/4 * 1/2 + 1/4 * 1/2 = 1/2 -> 0.5
    assert pair.kappa_error == pytest.approx(0.5)
    # a says 0.9 on 4 scored items and is right on 2: ECE = |0.5 - 0.9|
    assert a.ece == pytest.approx(0.4)
    row = next(r for r in a.thresholds if r.threshold == 0.9)
    assert (row.coverage, row.accuracy) == (0.8, 0.5)
    assert next(r for r in b.thresholds if r.threshold == 0.9).coverage == 0.0


def test_json_and_markdown_carry_the_numbers():
    result = evaluate(verdicts(), n_resamples=200)
    doc = to_json(result)
    assert set(doc) == {"judges", "ensemble", "agreement"}
    a = doc["judges"]["a"]
    assert a["f1"] == pytest.approx(0.4) and a["unscored"] == 1
    assert a["f1_ci95"]["low"] <= 0.4 <= a["f1_ci95"]["high"]
    assert a["prompt_tokens"] == 4 * 10 + 30
    text = to_markdown(result)
    assert "| a | 5 | 33.3 [" in text and "| ensemble | 5 |" in text and "a vs b" in text


def test_unlabelled_verdicts_are_refused():
    v = verdicts()[0]
    unlabelled = Verdict(**{**v.model_dump(), "attempt": Attempt(problem=Problem(text="q"), steps=("x",))})
    with pytest.raises(ValueError, match="no human label"):
        evaluate([unlabelled])

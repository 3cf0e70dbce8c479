"""The diagnostic-accuracy report's arithmetic on reviews small enough to check by hand."""

import pytest

from quantmedic.annotate.report import diagnostic_report, report_to_markdown
from quantmedic.annotate.sampling import allocate, stratified_sample
from quantmedic.judge.metrics import wilson_interval
from quantmedic.taxonomy.records import JudgeClaim, Review


def review(verdict, annotator, step, category, *, judge_step=2, judge_category="execution", weight=1.0,
           model="m1", right=None):
    return Review(verdict_id=verdict, annotator=annotator, first_wrong_step=step, category=category,
                  subtype="x", judge_correct=right,
                  judge=JudgeClaim(model="j", first_wrong_step=judge_step, category=judge_category),
                  model=model, quantization="gptq-w4-g128", sampling_weight=weight)


def test_accuracy_localisation_confusion_and_agreement_by_hand():
    reviews = [
        review("v1", "ann", 2, "execution", right=True), review("v1", "bob", 2, "execution", right=True),
        review("v2", "ann", 2, "method", right=False), review("v2", "bob", 2, "execution", right=True),
        review("v3", "ann", 3, "execution", right=False), review("v3", "bob", 1, "execution", right=False),
        review("v4", "ann", -1, "none", judge_step=0, judge_category="conceptual", model="m2", right=False),
    ]
    report = diagnostic_report(reviews)
    # per verdict, the share of annotators accepting: v1 1, v2 1/2, v3 0, v4 0 -> mean 1.5 / 4
    acc = report.diagnostic_accuracy
    assert (acc.n, acc.value) == (4, pytest.approx(0.375))
    expected = wilson_interval(1.5, 4)  # equal weights: Wilson on the (fractional) successes
    assert (acc.low, acc.high) == (pytest.approx(expected.low), pytest.approx(expected.high))
    # step exact: v1 1, v2 1, v3 0, v4 0 -> 0.5; within one: v3's 3 and 1 are both within one of 2 -> 0.75
    assert report.step_exact.value == pytest.approx(0.5)
    assert report.step_within_one.value == pytest.approx(0.75)
    assert report.said_judge_right.value == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    assert report.by_category["execution"].value == pytest.approx(0.5)
    assert report.by_category["conceptual"].value == 0.0 and report.by_model["m2"].n == 1
    assert report.confusion == {"conceptual": {"none": 1}, "execution": {"execution": 5, "method": 1}}
    ag = report.agreement
    assert (ag.items, ag.annotators) == (3, 2)
    # category pairs (execution, execution), (method, execution), (execution, execution):
    # po = 2/3; ann: execution 2/3, method 1/3; bob: execution 1 -> pe = 2/3 -> kappa 0
    assert ag.cohen_category == pytest.approx(0.0)
    # step pairs (2,2), (2,2), (3,1): po = 2/3; ann: 2 -> 2/3, 3 -> 1/3; bob: 2 -> 2/3, 1 -> 1/3
    # pe = 2/3 * 2/3 = 4/9 -> kappa = (2/3 - 4/9) / (5/9) = 0.4
    assert ag.cohen_step == pytest.approx(0.4)
    text = report_to_markdown(report)
    assert "37.5% [" in text and "| execution | 50.0%" in text


def test_sampling_weights_make_the_estimate_unbiased():
    # 2 verdicts stand for 9 (weight 4.5 each), 1 verdict stands for 1: weighted mean (4.5 + 0 + 1) / 10
    reviews = [review("a", "ann", 2, "execution", weight=4.5), review("b", "ann", 0, "execution", weight=4.5),
               review("c", "ann", 2, "execution", weight=1.0)]
    report = diagnostic_report(reviews)
    assert report.weighted and report.diagnostic_accuracy.value == pytest.approx(0.55)
    # Kish: n_eff = 10^2 / (4.5^2 * 2 + 1) = 100 / 41.5
    n_eff = 100 / 41.5
    expected = wilson_interval(0.55 * n_eff, n_eff)
    assert report.diagnostic_accuracy.low == pytest.approx(expected.low)


def test_stratified_sample_weights_are_inverse_inclusion_probabilities():
    from quantmedic.taxonomy.records import Attempt, Problem, Verdict

    def verdict(i, category):
        return Verdict(attempt=Attempt(problem=Problem(text=f"q{i}"), steps=("a", "A: 1")), status="ok",
                       first_wrong_step=0, category=category, subtype="s", judge_model="j", taxonomy="t@1")

    verdicts = [verdict(i, "execution") for i in range(80)] + [verdict(100 + i, "method") for i in range(20)]
    sample = stratified_sample(verdicts, 10, "category", seed=1)
    assert len(sample) == 10 and allocate({"execution": 80, "method": 20}, 10) == {"execution": 8, "method": 2}
    weights = {s.stratum: s.weight for s in sample}
    assert weights == {"execution": 10.0, "method": 10.0}
    assert sum(s.weight for s in sample) == 100  # the weights add up to the population
    assert [s.verdict.id for s in stratified_sample(verdicts, 10, "category", seed=1)] == [s.verdict.id for s in sample]
    assert [s.verdict.id for s in stratified_sample(verdicts, 10, "category", seed=2)] != [s.verdict.id for s in sample]

"""The step checker's symbolic part (:mod:`quantmedic.judge.checker_symbolic`): what sympy decides exactly, what
it must leave alone (equations being solved, conventions, what latex2sympy reads otherwise), timeouts and the
worker processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from quantmedic.judge import checker_symbolic as sym
from quantmedic.judge.check_job import check_attempts
from quantmedic.judge.checker import Finding, check_steps, check_text
from quantmedic.judge.checker_symbolic import Claim, SymbolicPool, candidates, decide_one
from quantmedic.judge.segment import split_steps
from quantmedic.pipelines.data import shipped_path
from quantmedic.taxonomy.jsonl import read_records
from quantmedic.taxonomy.records import Attempt, Problem

TRUE_CLAIMS = [
    r"So $2\sqrt{2} = \sqrt{8}$.",
    r"We simplify: $\sqrt{12} = 2\sqrt{3}$.",
    r"There are $5! = 120$ orders.",
    r"Choose two: $\binom{5}{2} = 10$.",
    r"Since $\log_2 8 = 3$, the answer is 3.",
    r"The area is $\frac{\pi}{3} \cdot 3 = \pi$.",
    r"$\sin \frac{\pi}{6} = \frac{1}{2}$",
    r"$\frac{4}{\sqrt{2}} = 2\sqrt{2}$ and $\sqrt[3]{64} = 4$",
    "So 5! = 120 ways.",
    "Expanding, $(x+1)^2 = x^2 + 2x + 1$.",
    "Factoring, $x^2 - 5x + 6 = (x-2)(x-3)$.",
    r"Simplifying, $\frac{x^2-1}{x-1} = x + 1$.",
]

FALSE_CLAIMS = [  # (text, expression, claimed, start of the true value)
    (r"We get $\sqrt{12} = 3\sqrt{3}$.", r"\sqrt{12}", r"3\sqrt{3}", "2*sqrt(3)"),
    (r"Choose two: $\binom{5}{2} = 11$.", r"\binom{5}{2}", "11", "10"),
    (r"Since $\log_2 8 = 4$, we stop.", r"\log_2 8", "4", "3"),
    (r"So $6! = 620$.", "6!", "620", "720"),
    ("So 5! = 121 ways.", "5!", "121", "120"),
    ("Expanding, $(x+1)^2 = x^2 + x + 1$.", "(x+1)^2", "x^2 + x + 1", "x**2 + 2*x + 1"),
    ("Distributing, $2(x + 3) + 4x = 6x + 3$.", "2(x + 3) + 4x", "6x + 3", "6*x + 6"),
    ("Factoring, $x^2 - 5x + 6 = (x-2)(x-4)$.", "x^2 - 5x + 6", "(x-2)(x-4)", "x**2 - 5*x + 6"),
]

NOT_FINDINGS = [
    "Simplifying, $2x + 3 = 13$.",  # an equation being solved
    "Expanding the left side, $(x+1)^2 = x^2 + 4$.",  # an equation: no parentheses on the right, but solved
    "We solve: expanding gives $(x+1)^2 = x^2 + 3$.",
    "Expanding, $(x + 1)^2 = 2x + 4$.",  # leading terms differ: an equation, not a slip
    "Simplify, so $x^2 + 2x + 1 = 0$ and $(x+1)^2 = 0$.",
    "$(x+1)^2 = x^2 + x + 1$ has no solution.",  # no word that transforms
    r"$\log 100 = 3$",  # which base?
    r"$\sin 30^\circ = \frac{1}{3}$",  # degrees
    r"Use $\pi = \frac{22}{7}$.",  # a convention
    r"$\sqrt{(9)(2)+9} = \sqrt{27}$ and $3(2) = 6$",  # latex2sympy reads (9)(2) and 3(2) as sums
    r"$\sqrt{2} = 1.41$",  # a decimal: the interval checker's
    "3 + 3 = 6! So we are done.",  # an exclamation mark
    "Expanding $(a+b)(c+d) = ac + ad + bc$",  # four letters
]


@pytest.mark.parametrize("text", TRUE_CLAIMS)
def test_true_symbolic_claims_are_decided_and_hold(text):
    result = check_text(text)
    assert result.false == () and result.symbolic >= 1 and result.timeouts == 0


@pytest.mark.parametrize(("text", "expression", "claimed", "true"), FALSE_CLAIMS)
def test_false_symbolic_claims_are_findings(text, expression, claimed, true):
    result = check_text(text)
    assert [(e, r, c) for e, r, c, _ in result.false] == [(expression, "=", claimed)]
    assert result.false[0][3].startswith(true)


@pytest.mark.parametrize("text", NOT_FINDINGS)
def test_equations_conventions_and_ambiguities_are_never_symbolic_findings(text):
    assert check_text(text).false == ()


def test_an_equation_is_not_even_a_candidate_and_a_leading_term_change_is_unreadable():
    assert candidates("Simplifying, $2x + 3 = 13$.") == []
    assert candidates("Expanding the left side, $(x+1)^2 = x^2 + 4$.") == []
    [claim] = candidates("Expanding, $(x + 1)^2 = 2x + 4$.")
    assert decide_one(claim).status == sym.UNREADABLE


def test_steps_without_such_claims_never_reach_sympy(monkeypatch):
    def refuse(claims):
        raise AssertionError(f"sympy asked about {claims}")

    monkeypatch.setattr(sym, "decide", refuse)
    steps = ("Janet sells 16 - 3 - 4 = 9 eggs.", "She makes 9 * 2 = $18 every day.", "So 18 + 1 = 20!")
    result = check_steps("a", steps)
    assert result.claims_symbolic == 0 and [f.step for f in result.findings] == [3]


def test_plain_text_is_never_evaluated_as_python():
    for side in ("__import__('os').system('true')", "5!.real", "x+1"):
        assert decide_one(Claim("value", side, "1", latex=False)).status == sym.UNREADABLE


def test_a_claim_sympy_cannot_finish_quickly_times_out_is_counted_and_the_pool_recovers(monkeypatch):
    slow = Claim("value", r"\sqrt{(10^{7})!}", r"2\sqrt{2}")
    with SymbolicPool(1, timeout=0.5) as pool:
        start = time.monotonic()
        first = pool.decide([slow, Claim("value", r"\sqrt{8}", r"2\sqrt{2}")])
        assert [d.status for d in first] == [sym.TIMEOUT, sym.TRUE] and pool.timeouts == 1
        assert time.monotonic() - start < 60
        monkeypatch.setattr(sym, "_default", pool)
        monkeypatch.setattr(sym, "_CACHE", {})
        result = check_text(r"Hence $\sqrt{(10^{7})!} = 2\sqrt{2}$, so $\binom{4}{2} = 7$.")
    assert result.timeouts == 1 and result.symbolic == 1 and [f[2] for f in result.false] == ["7"]


def test_the_worker_path_of_check_over_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr(sym, "_CACHE", {})
    problem = Problem(text="Simplify.")
    attempts = [Attempt(id=f"a{i}", problem=problem, steps=(rf"So $\binom{{{n}}}{{2}} = {n * (n - 1) // 2 + (i % 2)}$.",
                                                             "Expanding, $(x+2)^2 = x^2 + 4x + 4$."))
                for i, n in enumerate(range(5, 15))]
    summary = check_attempts(attempts, tmp_path / "f.jsonl", workers=2)
    findings = read_records(tmp_path / "f.jsonl", Finding)
    assert [f.attempt_id for f in findings] == [f"a{i}" for i in range(1, 10, 2)]
    assert summary.symbolic == 20 and summary.timeouts == 0 and summary.findings == 5
    assert all(f.step == 1 and f.expression.startswith(r"\binom") for f in findings)
    assert ("claims decided by sympy", "20") in summary.lines()


MATH500 = shipped_path("math500")  # the MATH-500 test set shipped with the package, reference solutions included
REFERENCE_STEPS = [  # steps of MATH-500 reference solutions the checker once fired on (its normalization)
    r"Since $90^3=729,\!000$, $\text{AB}$ is greater than 90.",
    r"Hence $$1 \mbox{ foot}^2 = 12^2 \mbox{ inches}^2 = 144 \mbox{ inches}^2$$",
    r"one million lire equals $\frac{3}{2}\cdot10,\!000/12=\boxed{1250}$ dollars.",
    r"the average price is $\frac{\$ 2.33}{43} \approx \$0.054 = \boxed{5.4 \text{ cents}}.$",
    r"Proof that $279/99999 = 0.\overline{00279}$:",
    r"the area is $\frac{1}{2}\cdot 3\cdot 10 = 15\text{ cm}^2.$",
    r"$\text{heap}(2) = \{*\} = *\text{mex}(1) = 0$",
]


@pytest.mark.parametrize("text", REFERENCE_STEPS)
def test_right_reference_steps_are_not_findings(text):
    assert check_text(text).false == ()


@pytest.mark.parametrize(("text", "claimed"), [(r"Since $90^3=729,\!001$, we stop.", "729,001"),
                                               (r"the area is $\frac{1}{2}\cdot 3\cdot 10 = 16\text{ cm}^2.$", "16")])
def test_the_same_shapes_still_catch_a_wrong_value(text, claimed):
    assert [f[2] for f in check_text(text).false] == [claimed]


def test_no_fires_on_the_math500_reference_solutions():
    rows = [json.loads(line) for line in MATH500.read_text(encoding="utf-8").splitlines()]
    results = [check_steps(r["unique_id"], split_steps(r["solution"])) for r in rows]
    assert [f for r in results for f in r.findings] == []
    assert sum(r.claims_symbolic for r in results) >= 40 and sum(r.claims_timed_out for r in results) == 0

"""Drawing the failures to treat, seeded, under a budget.

Strategies (the unit is one diagnosed failure; at most ``max_per_problem`` per problem):

* ``error-weighted``: each error category gets a share of the budget proportional to its share of
  the failures (largest remainder), so the medicine treats what dominates;
* ``stratified``: the categories get equal shares (a category with too few failures gives its
  unused share to the others);
* ``uniform``: a simple random sample of the failures.

With ``prefer_checker``, wherever the draw must choose among equally eligible failures (within a
category's share, within a problem's ``max_per_problem``, or the whole pool for ``uniform``), those the
step checker decided (:attr:`Diagnosis.checker_confirmed`) are taken first, at random among them, and the
others fill what is left. The category shares do not change. Without any checker-decided failure the draw
is the same as without the preference (the same random calls).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .diagnoses import Diagnosis

Strategy = Literal["error-weighted", "stratified", "uniform"]
STRATEGIES: tuple[str, ...] = ("error-weighted", "stratified", "uniform")


def largest_remainder(weights: Mapping[str, float], total: int) -> dict[str, int]:
    """Split ``total`` in proportion to ``weights`` with whole numbers that sum to ``total``.

    >>> largest_remainder({"a": 5, "b": 3, "c": 2}, 7)
    {'a': 4, 'b': 2, 'c': 1}
    """
    mass = sum(weights.values())
    if total <= 0 or mass <= 0:
        return {k: 0 for k in weights}
    exact = {k: total * w / mass for k, w in weights.items()}
    shares = {k: int(v) for k, v in exact.items()}
    left = total - sum(shares.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - shares[k]), k))[:left]:
        shares[k] += 1
    return shares


def allocate(available: Mapping[str, int], budget: int, strategy: Strategy) -> dict[str, int]:
    """How many failures to draw from each category: never more than it has, at most ``budget`` in all.

    >>> allocate({"execution": 60, "method": 30, "reasoning": 10}, 10, "error-weighted")
    {'execution': 6, 'method': 3, 'reasoning': 1}
    >>> allocate({"execution": 60, "method": 30, "reasoning": 1}, 9, "stratified")
    {'execution': 4, 'method': 4, 'reasoning': 1}
    """
    if strategy not in ("error-weighted", "stratified"):
        raise ValueError(f"allocate() takes error-weighted or stratified, not {strategy!r}")
    shares = {k: 0 for k in available}
    budget = min(budget, sum(available.values()))
    while sum(shares.values()) < budget:  # hand out what is left among the categories not yet full
        open_ = {k: n for k, n in available.items() if shares[k] < n}
        weights = {k: float(n) if strategy == "error-weighted" else 1.0 for k, n in open_.items()}
        extra = largest_remainder(weights, budget - sum(shares.values()))
        for k, n in extra.items():
            shares[k] = min(available[k], shares[k] + n)
    return shares


@dataclass(frozen=True)
class Selection:
    """The drawn failures, with what each category had and got."""

    chosen: tuple[Diagnosis, ...]
    available: dict[str, int]
    allocated: dict[str, int]
    strategy: str
    seed: int
    budget: int


def draw(rng: random.Random, group: Sequence[Diagnosis], k: int, prefer_checker: bool = False) -> list[Diagnosis]:
    """``k`` of ``group`` at random; with ``prefer_checker`` the checker-confirmed ones first."""
    first = [d for d in group if d.checker_confirmed] if prefer_checker else []
    if not first:
        return rng.sample(list(group), k)
    if len(first) >= k:
        return rng.sample(first, k)
    return first + rng.sample([d for d in group if not d.checker_confirmed], k - len(first))


def _one_per_problem(diagnoses: Sequence[Diagnosis], max_per_problem: int, rng: random.Random,
                     prefer_checker: bool = False) -> list[Diagnosis]:
    by_problem: dict[str, list[Diagnosis]] = defaultdict(list)
    for d in diagnoses:
        by_problem[d.attempt.problem.id].append(d)
    kept: list[Diagnosis] = []
    for problem_id in sorted(by_problem):
        group = sorted(by_problem[problem_id], key=lambda d: d.verdict.id)
        kept += draw(rng, group, min(max_per_problem, len(group)), prefer_checker)
    return kept


def select(diagnoses: Sequence[Diagnosis], budget: int, strategy: Strategy = "error-weighted", *, seed: int = 0,
           max_per_problem: int = 1, prefer_checker: bool = False) -> Selection:
    """Draw up to ``budget`` failures by ``strategy`` (checker-decided first with ``prefer_checker``); the same
    inputs and seed give the same draw."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if budget < 1 or max_per_problem < 1:
        raise ValueError("budget and max_per_problem must be at least 1")
    rng = random.Random(seed)
    pool = _one_per_problem(diagnoses, max_per_problem, rng, prefer_checker)
    by_category: dict[str, list[Diagnosis]] = defaultdict(list)
    for d in sorted(pool, key=lambda d: d.verdict.id):
        by_category[d.category].append(d)
    available = {k: len(v) for k, v in sorted(by_category.items())}
    if strategy == "uniform":
        chosen = draw(rng, sorted(pool, key=lambda d: d.verdict.id), min(budget, len(pool)), prefer_checker)
        allocated = dict(sorted(Counter(d.category for d in chosen).items()))
    else:
        allocated = allocate(available, budget, strategy)
        chosen = [d for k in available for d in draw(rng, by_category[k], allocated[k], prefer_checker)]
    return Selection(tuple(chosen), available, {k: allocated.get(k, 0) for k in available}, strategy, seed, budget)

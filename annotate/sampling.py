"""Choosing which verdicts go to humans: stratified random sampling with inverse-probability
weights, so accuracy estimated from fewer annotations stays unbiased.

Conflicts first: a verdict with ``conflict`` (the LLM judge puts the first error after the step
checker's checked error, or finds none) is always sent and always ahead of the others. Under a
sample, the conflicts are a stratum of their own (``conflict``) taken in full (weight 1) and count
toward the sample; the rest of it is drawn from the other verdicts as before. Without conflicts the
draw is exactly what it was before conflicts existed."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from quantmedic.taxonomy.records import Verdict

CONFLICT = "conflict"
"""The stratum of the conflicts under a sample: all of them, weight 1."""
STRATIFY = {
    "category": lambda v: v.category or "unscored",
    "model": lambda v: v.attempt.model,
    "none": lambda v: "all",
}


@dataclass(frozen=True)
class Sampled:
    """A verdict chosen for review, its stratum, and its weight (stratum size / stratum sample size)."""

    verdict: Verdict
    stratum: str
    weight: float


def allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Proportional allocation of ``n`` draws over strata (largest remainders), at least one per
    stratum while ``n`` allows, never more than a stratum holds.

    >>> allocate({"a": 80, "b": 15, "c": 5}, 10)
    {'a': 8, 'b': 1, 'c': 1}
    >>> allocate({"a": 3, "b": 1}, 10)
    {'a': 3, 'b': 1}
    """
    total = sum(sizes.values())
    if n >= total:
        return dict(sizes)
    quota = {s: n * size / total for s, size in sizes.items()}
    alloc = {s: min(size, max(1 if n >= len(sizes) else 0, int(quota[s]))) for s, size in sizes.items()}
    for s in sorted(sizes, key=lambda s: quota[s] - int(quota[s]), reverse=True):
        if sum(alloc.values()) >= n:
            break
        if alloc[s] < sizes[s]:
            alloc[s] += 1
    while sum(alloc.values()) > n:  # the minimum of one each overshot: trim the largest strata
        s = max(alloc, key=lambda s: alloc[s])
        alloc[s] -= 1
    return alloc


def conflicts_first(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """The conflicts, then the others, each in input order."""
    return [v for v in verdicts if v.conflict] + [v for v in verdicts if not v.conflict]


def stratified_sample(verdicts: Sequence[Verdict], n: int | None, stratify: str = "category",
                      seed: int = 0) -> list[Sampled]:
    """Up to ``n`` verdicts, the conflicts first and all of them (see the module), the others drawn without
    replacement within strata; all of them (weight 1) when ``n`` is None or not smaller than the population.
    Order: the conflicts, then the others, each in input order (more than ``n`` only when the conflicts are)."""
    key: Callable[[Verdict], str] = STRATIFY[stratify]
    if n is None or n >= len(verdicts):
        return [Sampled(v, key(v), 1.0) for v in conflicts_first(verdicts)]
    conflicts = [Sampled(v, CONFLICT, 1.0) for v in verdicts if v.conflict]
    rest = [v for v in verdicts if not v.conflict]
    return conflicts + _drawn(rest, max(n - len(conflicts), 0), key, seed)


def _drawn(verdicts: Sequence[Verdict], n: int, key: Callable[[Verdict], str], seed: int) -> list[Sampled]:
    """``n`` verdicts drawn within strata of ``key`` (all, weight 1, when ``n`` is not smaller), in input order."""
    if n >= len(verdicts):
        return [Sampled(v, key(v), 1.0) for v in verdicts]
    strata: dict[str, list[int]] = {}
    for i, verdict in enumerate(verdicts):
        strata.setdefault(key(verdict), []).append(i)
    alloc = allocate({s: len(ix) for s, ix in strata.items()}, n)
    rng = random.Random(seed)
    chosen: dict[int, Sampled] = {}
    for stratum in sorted(strata):
        members = strata[stratum]
        picks = rng.sample(members, alloc[stratum])
        for i in picks:
            chosen[i] = Sampled(verdicts[i], stratum, len(members) / alloc[stratum])
    return [chosen[i] for i in sorted(chosen)]

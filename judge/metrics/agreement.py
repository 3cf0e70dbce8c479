"""Chance-corrected agreement between raters on nominal labels.

Labels are any hashable values; None marks a missing rating. Every function returns None when
its statistic is undefined: no pairable ratings, or chance agreement equal to 1 (every rating
is the same single category, so there is no variation to agree on). It never returns a value
from a division by zero.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence


def cohen_kappa(a: Sequence[Hashable | None], b: Sequence[Hashable | None]) -> float | None:
    """Cohen's kappa between two raters' labels for the same items (paired by position).

    Pairs where either side is None are dropped. ``(po - pe) / (1 - pe)``, with ``po`` the share
    of agreeing pairs and ``pe`` the agreement expected from each rater's own label shares.

    >>> cohen_kappa(["y", "y", "n", "n"], ["y", "n", "n", "n"])
    0.5
    """
    if len(a) != len(b):
        raise ValueError(f"raters have {len(a)} and {len(b)} labels")
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    n = len(pairs)
    if n == 0:
        return None
    agree = sum(x == y for x, y in pairs)
    count_a = Counter(x for x, _ in pairs)
    count_b = Counter(y for _, y in pairs)
    chance = sum(count_a[k] * count_b[k] for k in count_a)  # pe * n^2, an exact integer
    if chance == n * n:
        return None
    return (n * agree - chance) / (n * n - chance)


def _items(ratings: Iterable[Iterable[Hashable | None]]) -> list[list[Hashable]]:
    """Each item's non-missing labels, keeping only items with at least two."""
    items = [[r for r in item if r is not None] for item in ratings]
    return [item for item in items if len(item) >= 2]


def fleiss_kappa(ratings: Iterable[Iterable[Hashable | None]]) -> float | None:
    """Fleiss' kappa over per-item lists of labels (one entry per rater who rated the item).

    Items may have different numbers of ratings (None entries are dropped; items left with
    fewer than 2 are skipped). The generalisation used: item ``i`` with ``n_i`` ratings, ``n_ij``
    in category ``j``, has agreement ``P_i = sum_j n_ij (n_ij - 1) / (n_i (n_i - 1))``;
    ``P = mean_i P_i``; ``p_j`` is category ``j``'s share of all ratings and ``Pe = sum_j p_j^2``;
    kappa = ``(P - Pe) / (1 - Pe)``. With equal ``n_i`` this is exactly Fleiss' kappa.

    >>> round(fleiss_kappa([["a", "a"], ["b", "b"], ["a", "b"]]), 6)
    0.333333
    """
    items = _items(ratings)
    if not items:
        return None
    totals: Counter = Counter()
    agreement = 0.0
    for item in items:
        counts = Counter(item)
        totals.update(counts)
        n_i = len(item)
        agreement += sum(c * (c - 1) for c in counts.values()) / (n_i * (n_i - 1))
    observed = agreement / len(items)
    n = sum(totals.values())
    squares = sum(c * c for c in totals.values())  # Pe * n^2, an exact integer
    if squares == n * n:
        return None
    chance = squares / (n * n)
    return (observed - chance) / (1 - chance)


def krippendorff_alpha_nominal(ratings: Iterable[Iterable[Hashable | None]]) -> float | None:
    """Krippendorff's alpha for nominal data over per-item lists of labels, None = missing.

    Items with fewer than 2 non-missing labels are not pairable and are dropped. From the
    coincidence matrix ``o_ck = sum_u (number of ordered c-k pairs in unit u) / (m_u - 1)``,
    with ``n_c = sum_k o_ck`` and ``n = sum_c n_c``:
    ``alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k``.

    >>> krippendorff_alpha_nominal([["a", "a"], ["b", "b"], ["a", "b"]])
    0.4444444444444444
    """
    items = _items(ratings)
    n_c: Counter = Counter()
    disagreement = 0.0  # sum over c != k of o_ck
    for item in items:
        counts = Counter(item)
        m = len(item)
        n_c.update(counts)
        # ordered pairs of different values among m: m^2 - sum_c count_c^2
        disagreement += (m * m - sum(c * c for c in counts.values())) / (m - 1)
    n = sum(n_c.values())
    expected = n * n - sum(c * c for c in n_c.values())  # sum over c != k of n_c n_k
    if n == 0 or expected == 0:
        return None
    return 1 - (n - 1) * disagreement / expected

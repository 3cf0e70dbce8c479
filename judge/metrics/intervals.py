"""Confidence intervals for a proportion: Wilson's score interval, plain and with sampling weights.

The weighted version plugs the weighted proportion and Kish's effective sample size
``n_eff = (sum w)^2 / sum w^2`` into Wilson's formula, the usual approximation for a proportion
estimated from a stratified (or otherwise weighted) sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval ``[low, high]`` at level ``confidence``.

    >>> 0.5 in Interval(0.4, 0.6, 0.95)
    True
    """

    low: float
    high: float
    confidence: float

    @property
    def width(self) -> float:
        return self.high - self.low

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high


def check_confidence(confidence: float) -> float:
    """``confidence`` if it lies strictly between 0 and 1, else ValueError."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return float(confidence)


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + check_confidence(confidence) / 2)


def _wilson(p: float, n: float, confidence: float) -> Interval:
    z = _z(confidence)
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    # At p = 0 (p = 1) the lower (upper) bound is exactly 0 (1); clamp away the rounding error.
    low = 0.0 if p == 0 else max(0.0, centre - half)
    high = 1.0 if p == 1 else min(1.0, centre + half)
    return Interval(low, high, confidence)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval | None:
    """Wilson's score interval for ``successes`` out of ``n``; None when ``n == 0``.

    >>> i = wilson_interval(8, 10)
    >>> round(i.low, 4), round(i.high, 4)
    (0.4902, 0.9433)
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return None
    return _wilson(successes / n, n, confidence)


def weighted_wilson_interval(outcomes: Sequence[float], weights: Sequence[float],
                             confidence: float = 0.95) -> Interval | None:
    """Wilson's interval for the weighted proportion of ``outcomes`` (each 0/1 or False/True).

    ``n`` is Kish's effective sample size ``(sum w)^2 / sum w^2``; equal weights give exactly
    :func:`wilson_interval`. None when there are no outcomes or all weights are 0. Weights must
    be >= 0.

    >>> weighted_wilson_interval([1, 1, 0, 0], [1, 1, 1, 1]) == wilson_interval(2, 4)
    True
    """
    if len(outcomes) != len(weights):
        raise ValueError(f"{len(outcomes)} outcomes but {len(weights)} weights")
    ws = [float(w) for w in weights]
    xs = [float(x) for x in outcomes]
    if any(not w >= 0 or math.isinf(w) for w in ws):
        raise ValueError("weights must be finite and >= 0")
    if any(not 0.0 <= x <= 1.0 for x in xs):
        raise ValueError("outcomes must lie in [0, 1]")
    total = math.fsum(ws)
    if total == 0:
        return None
    p = math.fsum(w * x for w, x in zip(ws, xs)) / total
    n_eff = total * total / math.fsum(w * w for w in ws)
    return _wilson(p, n_eff, confidence)

"""Calibration of stated confidences: a reliability table and the expected calibration error.

Bins are ``n_bins`` equal-width intervals ``[i/n_bins, (i+1)/n_bins)`` on [0, 1]; the last one
also holds confidence 1.0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CalibrationBin:
    """One confidence bin: its bounds, size, and mean confidence and accuracy (None if empty)."""

    lower: float
    upper: float
    count: int
    mean_confidence: float | None
    accuracy: float | None


def _bin_index(confidence: float, n_bins: int) -> int:
    index = min(int(confidence * n_bins), n_bins - 1)
    # Match the stated bounds i / n_bins exactly, whatever the rounding of confidence * n_bins.
    if confidence < index / n_bins:
        index -= 1
    elif index < n_bins - 1 and confidence >= (index + 1) / n_bins:
        index += 1
    return index


def reliability_table(confidences: Sequence[float], correct: Sequence[bool | int],
                      n_bins: int = 10) -> list[CalibrationBin]:
    """All ``n_bins`` bins, empty ones included (count 0, None statistics).

    >>> [(b.count, b.mean_confidence, b.accuracy) for b in reliability_table([0.2, 0.9, 1.0], [1, 1, 0], 2)]
    [(1, 0.2, 1.0), (2, 0.95, 0.5)]
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences but {len(correct)} outcomes")
    members: list[list[tuple[float, float]]] = [[] for _ in range(n_bins)]
    for confidence, outcome in zip(confidences, correct):
        confidence = float(confidence)
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence must lie in [0, 1], got {confidence!r}")
        members[_bin_index(confidence, n_bins)].append((confidence, float(bool(outcome))))
    table = []
    for i, pool in enumerate(members):
        count = len(pool)
        table.append(CalibrationBin(
            i / n_bins, (i + 1) / n_bins, count,
            math.fsum(c for c, _ in pool) / count if count else None,
            math.fsum(o for _, o in pool) / count if count else None))
    return table


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool | int],
                               n_bins: int = 10) -> float | None:
    """``sum over bins of (count / N) * |accuracy - mean_confidence|``; None for no samples.

    >>> round(expected_calibration_error([0.2, 0.9, 1.0], [1, 1, 0], 2), 4)  # 1/3*0.8 + 2/3*0.45
    0.5667
    """
    table = reliability_table(confidences, correct, n_bins)
    total = sum(b.count for b in table)
    if total == 0:
        return None
    return math.fsum(b.count / total * abs(b.accuracy - b.mean_confidence) for b in table if b.count)

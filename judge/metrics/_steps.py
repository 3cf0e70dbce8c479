"""Checking step indices: a step is an int >= -1 (-1 = "no error"), a prediction may also be None."""

from __future__ import annotations

import operator


def as_step(value, what: str) -> int:
    """``value`` as an int step index >= -1, or ValueError (bools and floats are refused).

    >>> as_step(2, "label")
    2
    """
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an int step index, got {value!r}")
    try:
        step = operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an int step index, got {value!r}") from None
    if step < -1:
        raise ValueError(f"{what} must be >= -1, got {step}")
    return step


def check_pair(pair) -> tuple[int, int | None]:
    """One (label, predicted) pair, validated; predicted may be None (unscored)."""
    label, predicted = pair
    return as_step(label, "label"), None if predicted is None else as_step(predicted, "predicted")

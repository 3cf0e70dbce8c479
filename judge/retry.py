"""Retry policy for judge requests: which failures to retry, and how long to wait."""

from __future__ import annotations

import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, honouring ``Retry-After`` up to ``max_delay``.

    ``max_retries`` bounds transport retries (429, 5xx, timeouts, dropped connections) per request;
    other 4xx answers are never retried.
    """

    max_retries: int = 6
    base_delay: float = 0.5
    max_delay: float = 60.0

    def delay(self, retry: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based).

        >>> RetryPolicy(base_delay=1, max_delay=10).delay(10, rng=random.Random(0)) <= 10
        True
        >>> RetryPolicy(max_delay=10).delay(0, retry_after=3.0)
        3.0
        >>> RetryPolicy(max_delay=10).delay(0, retry_after=3600)
        10.0
        """
        if retry_after is not None and retry_after >= 0:
            return float(min(self.max_delay, retry_after))
        ceiling = min(self.max_delay, self.base_delay * 2**retry)
        return (rng or random).uniform(ceiling / 2, ceiling)


def is_retryable_status(status: int) -> bool:
    """429 and 5xx are retried; every other status is final.

    >>> [is_retryable_status(s) for s in (429, 500, 503, 400, 401, 404)]
    [True, True, True, False, False, False]
    """
    return status == 429 or 500 <= status <= 599


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date.

    >>> parse_retry_after("2")
    2.0
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:05 GMT", now=datetime(2015, 10, 21, 7, 28, tzinfo=timezone.utc))
    5.0
    >>> parse_retry_after("soon") is None
    True
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())

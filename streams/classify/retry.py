"""Backoff between attempts: inference retries and produce retries share one cap."""

from __future__ import annotations

MAX_BACKOFF_S = 5.0


def backoff_s(attempt: int, base_s: float) -> float:
    """Seconds to wait before attempt `attempt + 1`: doubling from `base_s`, capped."""
    return min(MAX_BACKOFF_S, base_s * 2.0**attempt)

"""Retry pauses: exponential backoff with full jitter."""

from __future__ import annotations

import random

__all__ = ["backoff_delay"]


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, ...): uniform in [0, min(cap,
    base * 2**attempt)], so clients that failed together do not retry in lockstep."""
    return random.uniform(0, min(cap, base * 2**attempt))

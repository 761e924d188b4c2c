"""Bounded exponential backoff, interruptible by shutdown."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Delays of ``base * 2**n`` capped at ``cap``, with ±20 % jitter; ``attempts`` tries in all."""

    attempts: int
    base_s: float
    cap_s: float

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        raw = min(self.cap_s, self.base_s * (2 ** (attempt - 1)))
        return raw * random.uniform(0.8, 1.2)

    def sleep(self, attempt: int, stop: threading.Event) -> bool:
        """Wait before the next attempt; False if shutdown was requested meanwhile."""
        return not stop.wait(self.delay(attempt))

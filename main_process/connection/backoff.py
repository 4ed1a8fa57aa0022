"""Reconnection delays: exponential backoff with full jitter.

This module owns one thing: given how many attempts in a row have failed, how long to
wait before the next one. It has no clock and does no waiting; the connection state
machine (``connection/state.py``) asks it for a delay and sets a deadline. The random
source is injected so tests can pin the jitter.

Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): the delay after
the n-th consecutive failure is uniform in ``[0, min(cap, base * factor**n))``. A herd of
clients that lost the same server spreads out over the whole window instead of
reconnecting in lock step, which a ±0.5 s jitter (python-socketio's own) does not do
once the ceiling is several seconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

RandomSource = Callable[[], float]
"""Returns a float in ``[0, 1)``, like ``random.random``."""


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """The numbers of the backoff; every one is configurable, defaults from PROTOCOL.md §6."""

    base: float = 1.0
    factor: float = 2.0
    cap: float = 30.0
    reset_after: float = 10.0
    """Seconds a connection must stay authenticated before the failure count resets."""

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap <= 0:
            raise ValueError("backoff base and cap must be positive")
        if self.factor < 1:
            raise ValueError("backoff factor must be at least 1")
        if self.reset_after < 0:
            raise ValueError("backoff reset_after must not be negative")

    def ceiling(self, failures: int) -> float:
        """The upper bound of the delay after ``failures`` consecutive failures (0-based)."""
        if failures < 0:
            raise ValueError("failures must not be negative")
        if self.base >= self.cap:
            return self.cap
        if self.factor == 1:
            return self.base
        # Compare exponents instead of computing factor**failures, which overflows a
        # float after about a thousand failures of a client that retries forever.
        failures_to_cap = math.log(self.cap / self.base, self.factor)
        if failures >= failures_to_cap:
            return self.cap
        return min(self.cap, self.base * self.factor**failures)


class Backoff:
    """A failure counter with the delay that goes with it.

    ``next_delay()`` returns the delay for the current count and then counts one more
    failure; ``reset()`` forgets them all.
    """

    def __init__(self, policy: BackoffPolicy, random_source: RandomSource = random.random) -> None:
        self.policy = policy
        self._random = random_source
        self.failures = 0

    def next_delay(self) -> float:
        ceiling = self.policy.ceiling(self.failures)
        self.failures += 1
        fraction = self._random()
        # An injected source outside [0, 1) must not produce a negative or over-cap delay.
        fraction = min(max(fraction, 0.0), 1.0)
        return ceiling * fraction

    def reset(self) -> None:
        self.failures = 0

"""Reconnection policy: how long to wait before the next attempt, and when to give up.

A pure object (no sleeping, no timers, no I/O) so the schedule is exact and cheap to
test; whoever reconnects owns the timer and asks this object for each delay.
The seed's schedule: min(1 s * 2^attempt, 30 s) -> 1, 2, 4, 8, 16 s, at most 5 attempts.

The schedule starts again only after a connection has proven itself (stayed up
`proven_after` seconds, or completed a turn): a provider that accepts and drops at
once must not make the call reconnect forever.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass
class ReconnectPolicy:
    """Exponential backoff with a cap and a budget of attempts.

    `jitter` is a fraction in [0, 1): each delay is scaled by a factor drawn from
    [1 - jitter, 1 + jitter] and then capped again, so it never exceeds `cap`.
    `seed` makes the jitter reproducible (tests); None draws from system entropy.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 30.0
    max_attempts: int = 5
    jitter: float = 0.0
    seed: int | None = None
    proven_after: float = 10.0
    attempt: int = field(default=0, init=False)
    _up_since: float | None = field(default=None, init=False, repr=False, compare=False)
    _rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, value in (("base", self.base), ("factor", self.factor), ("cap", self.cap), ("jitter", self.jitter)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"ReconnectPolicy: {name} must be a finite number >= 0, got {value!r}")
        if self.factor < 1:
            raise ValueError(f"ReconnectPolicy: factor must be >= 1, got {self.factor!r}")
        if self.jitter >= 1:
            raise ValueError(f"ReconnectPolicy: jitter must be below 1, got {self.jitter!r}")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 0:
            raise ValueError(f"ReconnectPolicy: max_attempts must be an integer >= 0, got {self.max_attempts!r}")
        self._rng = random.Random(self.seed)

    @property
    def exhausted(self) -> bool:
        return self.attempt >= self.max_attempts

    def next_delay(self) -> float | None:
        """The delay before the next attempt, counting that attempt; None once all are used."""
        if self.exhausted:
            return None
        # factor**attempt can overflow for large budgets; the cap makes the exact value moot.
        try:
            delay = min(self.base * self.factor**self.attempt, self.cap)
        except OverflowError:
            delay = self.cap
        if self.jitter:
            delay = min(delay * self._rng.uniform(1 - self.jitter, 1 + self.jitter), self.cap)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """A new call: the whole budget again."""
        self.attempt = 0
        self._up_since = None

    def connected(self, now: float) -> None:
        """A connection is up; it is not yet proven."""
        self._up_since = now

    def proven(self) -> None:
        """The connection completed a turn: the next failure starts the schedule again."""
        self.attempt = 0

    def disconnected(self, now: float) -> None:
        """The connection ended; one that stayed up long enough proved itself."""
        if self._up_since is not None and now - self._up_since >= self.proven_after:
            self.attempt = 0
        self._up_since = None

"""A token bucket per client, so one desktop (or attacker) cannot flood the receiver. Pure: the clock is injected."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

log = logging.getLogger(__name__)


class RateLimiter:
    """Token bucket per client: `rate` posts a second on average, bursts up to `burst`.

    Pure (the clock is injected). Memory is bounded: beyond `max_clients` the least
    recently seen client's bucket is forgotten (it comes back full, which is generous).
    """

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 10_000) -> None:
        if rate < 0 or burst < 1:
            raise ValueError("rate must be >= 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def acquire(self, client: str) -> float:
        """Take one token: 0.0 when the post may go ahead, else the seconds until it may."""
        if self.rate == 0:
            return 0.0
        now = self._clock()
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        return wait

"""Latency telemetry: named durations, nearest-rank percentiles, and seed-format batches.

A pure object: it never sends anything itself. Every `batch_size` records it hands a
payload in the seed's wire format (DESIGN.md, "Metrics wire format") to `on_batch`,
which is expected to be quick and non-blocking (core.metrics_sender.MetricsSender.submit).

Which event a batch describes: the seed reported only its one user-facing latency, so
a batch carries the stats of `response_latency` when any has been recorded, and of all
events together before the first answer (so early batches are never empty).

Memory stays flat over a call of many hours: each event name keeps a rolling window of
its newest `window` values, and the names are the engine's fixed set.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any, TypedDict

log = logging.getLogger(__name__)

BATCH_EVENT = "response_latency"


class LatencyStats(TypedDict):
    count: int
    avg: float | None
    p95: float | None
    p99: float | None


def percentile(values: Iterable[float], p: float) -> float | None:
    """Nearest rank: the value at index ceil(n * p) - 1 of a sorted copy; None when empty.

    The rank is computed on the decimal value of p (0.95 exactly, not its binary
    approximation), so n * p landing on a whole number is never pushed up by rounding.
    """
    if not 0 < p <= 1:
        raise ValueError(f"percentile must be in (0, 1], got {p}")
    ordered = sorted(values)  # a new list: the caller's data is never reordered
    if not ordered:
        return None
    rank = math.ceil(Fraction(repr(p)) * len(ordered))
    return ordered[max(rank - 1, 0)]


def summarize(values: Iterable[float]) -> LatencyStats:
    data = list(values)
    if not data:
        return {"count": 0, "avg": None, "p95": None, "p99": None}
    return {
        "count": len(data),
        "avg": math.fsum(data) / len(data),
        "p95": percentile(data, 0.95),
        "p99": percentile(data, 0.99),
    }


class LatencyTracker:
    """Collects durations (ms) by event name for one session."""

    def __init__(
        self,
        session_id: str,
        batch_size: int = 10,
        on_batch: Callable[[dict[str, Any]], None] | None = None,
        *,
        window: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.session_id = session_id
        self.batch_size = batch_size
        self.on_batch = on_batch
        self.window = window
        self._clock = clock
        self._values: dict[str, deque[float]] = {}
        self._recorded = 0

    @property
    def recorded(self) -> int:
        """How many measurements were recorded in all (the windows keep only the newest)."""
        return self._recorded

    def record(self, name: str, ms: float) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"event name must be non-empty text, got {name!r}")
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms < 0:
            raise ValueError(f"{name}: a duration must be a finite number of ms >= 0, got {ms!r}")
        values = self._values.get(name)
        if values is None:
            values = self._values[name] = deque(maxlen=self.window)
        values.append(float(ms))
        self._recorded += 1
        if self._recorded % self.batch_size == 0:
            self._emit_batch()

    def values(self, name: str) -> list[float]:
        """A copy of the window for one event, oldest first (for the live plot)."""
        return list(self._values.get(name, ()))

    def names(self) -> list[str]:
        return list(self._values)

    def stats(self, name: str | None = None) -> LatencyStats:
        """count/avg/p95/p99 over one event's window, or over all events when name is None."""
        if name is not None:
            return summarize(self._values.get(name, ()))
        return summarize(value for values in self._values.values() for value in values)

    def batch(self) -> dict[str, Any]:
        """The seed-format payload for what has been recorded so far."""
        metrics = self.stats(BATCH_EVENT if self._values.get(BATCH_EVENT) else None)
        return {
            "type": "realtime_latency",
            "sessionId": self.session_id,
            "timestamp": round(self._clock() * 1000),  # ms since the epoch, as the seed's Date.now()
            "metrics": dict(metrics),
        }

    def _emit_batch(self) -> None:
        if self.on_batch is None:
            return
        try:
            self.on_batch(self.batch())
        except Exception as exc:  # noqa: BLE001 - telemetry must never break the call that records it
            log.warning("latency batch handler failed (%s: %s); the call goes on", type(exc).__name__, exc)

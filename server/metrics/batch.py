"""What a latency batch is and how a received one is checked (pure: no I/O).

The wire format is the seed's (DESIGN.md, "Metrics wire format"):
{"type": "realtime_latency", "sessionId": "…", "timestamp": ms, "metrics": {"count", "avg", "p95", "p99"}},
latencies in milliseconds. `timestamp` (the sender's clock, ms since the epoch) is optional
because the seed's own client never sent one; every other field is required. A newer client
may add "usage" (the call's tokens, from the provider's `response.done`, and an estimated
cost); it is optional so the seed's shape keeps working. Unknown extra fields are ignored so
a newer client still reaches an older receiver.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

BATCH_TYPE = "realtime_latency"
MAX_LATENCY_MS = 3_600_000  # an hour: anything above is a broken clock, not a latency
MAX_COUNT = 1_000_000_000
MAX_TIMESTAMP_MS = 100_000_000_000_000  # about the year 5000
MAX_SESSION_ID = 128
MAX_TOKENS = 1_000_000_000_000  # per batch; more is a broken counter, not a conversation
MAX_COST_USD = 1_000_000.0


class InvalidBatch(ValueError):
    """A received batch is malformed; `field` names the offending field for the 400 answer."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Usage:
    """Tokens a desktop used since its previous batch (OpenAI's `usage` names, flattened).

    Each token field may be left out by the sender (0); `input_tokens` includes its text,
    audio and cached parts, so the kinds overlap and are not to be summed together.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float | None = None

    def tokens(self) -> Iterator[tuple[str, int]]:
        """(kind, count) per token field: "input", "output", "input_text", … ("_tokens" dropped)."""
        for name in TOKEN_FIELDS:
            yield name.removesuffix("_tokens"), getattr(self, name)


TOKEN_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Usage) if f.name.endswith("_tokens"))
TOKEN_KINDS: tuple[str, ...] = tuple(name.removesuffix("_tokens") for name in TOKEN_FIELDS)


@dataclass(frozen=True)
class MetricsBatch:
    session_id: str
    count: int
    avg: float
    p95: float
    p99: float
    client_timestamp: float | None = None
    usage: Usage | None = None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bounded_number(data: dict[str, Any], key: str, field: str, upper: float) -> float:
    if key not in data:
        raise InvalidBatch(field, "is missing")
    value = data[key]
    # Comparisons, not math.isfinite: NaN fails both, and a huge JSON integer must not overflow a float.
    if not _is_number(value) or not 0 <= value <= upper:
        raise InvalidBatch(field, f"must be a number from 0 to {upper:g}")
    return float(value)


def _parse_usage(data: Any) -> Usage:
    if not isinstance(data, dict):
        raise InvalidBatch("usage", "must be an object of token counts")
    tokens: dict[str, int] = {}
    for name in TOKEN_FIELDS:
        value = data.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TOKENS:
            raise InvalidBatch(f"usage.{name}", f"must be a whole number from 0 to {MAX_TOKENS}")
        tokens[name] = value
    cost = None
    if data.get("cost_usd") is not None:
        cost = _bounded_number(data, "cost_usd", "usage.cost_usd", MAX_COST_USD)
    return Usage(**tokens, cost_usd=cost)


def parse_batch(data: Any) -> MetricsBatch:
    """Check a decoded JSON body; raises InvalidBatch naming the first bad field."""
    if not isinstance(data, dict):
        raise InvalidBatch("body", "must be a JSON object")
    if data.get("type") != BATCH_TYPE:
        raise InvalidBatch("type", f'must be "{BATCH_TYPE}"')
    session = data.get("sessionId")
    if not isinstance(session, str) or not 0 < len(session) <= MAX_SESSION_ID or not session.isprintable():
        raise InvalidBatch("sessionId", f"must be printable text of 1 to {MAX_SESSION_ID} characters")
    stamp = None
    if data.get("timestamp") is not None:
        stamp = _bounded_number(data, "timestamp", "timestamp", MAX_TIMESTAMP_MS)
    metrics = data.get("metrics")
    if not isinstance(metrics, dict):
        raise InvalidBatch("metrics", "must be an object with count, avg, p95 and p99")
    count = metrics.get("count")
    if not _is_number(count) or not 1 <= count <= MAX_COUNT or count != int(count):
        raise InvalidBatch("metrics.count", f"must be a whole number from 1 to {MAX_COUNT}")
    avg, p95, p99 = (_bounded_number(metrics, key, f"metrics.{key}", MAX_LATENCY_MS) for key in ("avg", "p95", "p99"))
    if p95 > p99:
        raise InvalidBatch("metrics.p99", "must not be below metrics.p95")
    usage = None if data.get("usage") is None else _parse_usage(data["usage"])
    return MetricsBatch(session, int(count), avg, p95, p99, stamp, usage)

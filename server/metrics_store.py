"""What a latency batch is, how a received one is checked, and where it is kept (SQLite).

The wire format is the seed's (DESIGN.md, "Metrics wire format"):
{"type": "realtime_latency", "sessionId": "…", "timestamp": ms, "metrics": {"count", "avg", "p95", "p99"}}.
`timestamp` (the sender's clock, ms since the epoch) is optional because the seed's own
client never sent one; every other field is required. Unknown extra fields are ignored
so a newer client still reaches an older receiver.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BATCH_TYPE = "realtime_latency"
MAX_LATENCY_MS = 3_600_000  # an hour: anything above is a broken clock, not a latency
MAX_COUNT = 1_000_000_000
MAX_TIMESTAMP_MS = 100_000_000_000_000  # about the year 5000
MAX_SESSION_ID = 128


class InvalidBatch(ValueError):
    """A received batch is malformed; `field` names the offending field for the 400 answer."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class MetricsBatch:
    session_id: str
    count: int
    avg: float
    p95: float
    p99: float
    client_timestamp: float | None = None


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
    return MetricsBatch(session, int(count), avg, p95, p99, stamp)


@dataclass(frozen=True)
class StoredBatch:
    received_at: float
    batch: MetricsBatch


class MetricsStore:
    """Batches in one SQLite file, in the order received."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            # A corrupt file is set aside, not a crash loop: the receiver starts afresh and says so.
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            path.rename(aside)
            log.warning("metrics database %s was unreadable (%s); moved it to %s and started a new one", path, exc, aside)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path)
        try:
            # WAL + NORMAL: a commit survives a killed process without an fsync per post.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS batches ("
                " id INTEGER PRIMARY KEY, received_at REAL NOT NULL, session_id TEXT NOT NULL,"
                " client_timestamp REAL, count INTEGER NOT NULL, avg REAL NOT NULL, p95 REAL NOT NULL, p99 REAL NOT NULL)"
            )
            db.execute("SELECT count(*) FROM batches").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def add(self, batch: MetricsBatch, received_at: float) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO batches (received_at, session_id, client_timestamp, count, avg, p95, p99)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (received_at, batch.session_id, batch.client_timestamp, batch.count, batch.avg, batch.p95, batch.p99),
            )

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM batches").fetchone()[0])

    def batches(self) -> Iterator[StoredBatch]:
        """All batches, oldest first, read lazily (the table may be large)."""
        rows = self._db.execute(
            "SELECT received_at, session_id, client_timestamp, count, avg, p95, p99 FROM batches ORDER BY id"
        )
        for received_at, session, stamp, count, avg, p95, p99 in rows:
            yield StoredBatch(received_at, MetricsBatch(session, count, avg, p95, p99, stamp))

    def close(self) -> None:
        self._db.close()

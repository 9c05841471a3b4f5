"""Where received batches are kept: one SQLite file, in the order received.

A database written before batches carried usage gains the usage columns when opened
(NULL for its old rows), so an upgrade keeps every batch.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from server.metrics.batch import TOKEN_FIELDS, MetricsBatch, Usage

log = logging.getLogger(__name__)

_LATENCY_COLUMNS = ("received_at", "session_id", "client_timestamp", "count", "avg", "p95", "p99")
# NULL in every usage column: the batch carried no usage (the seed's shape, or a row from before usage).
_USAGE_COLUMNS = (*TOKEN_FIELDS, "cost_usd")
_COLUMNS = ", ".join(_LATENCY_COLUMNS + _USAGE_COLUMNS)
_INSERT = f"INSERT INTO batches ({_COLUMNS}) VALUES ({', '.join('?' * (len(_LATENCY_COLUMNS) + len(_USAGE_COLUMNS)))})"


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
            present = {row[1] for row in db.execute("PRAGMA table_info(batches)")}
            with db:
                for column in _USAGE_COLUMNS:
                    if column not in present:
                        kind = "REAL" if column == "cost_usd" else "INTEGER"
                        db.execute(f"ALTER TABLE batches ADD COLUMN {column} {kind}")
            db.execute("SELECT count(*) FROM batches").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def add(self, batch: MetricsBatch, received_at: float) -> None:
        usage = batch.usage
        usage_values = (None,) * len(_USAGE_COLUMNS) if usage is None else \
            (*(getattr(usage, name) for name in TOKEN_FIELDS), usage.cost_usd)
        with self._db:
            self._db.execute(
                _INSERT,
                (received_at, batch.session_id, batch.client_timestamp, batch.count, batch.avg, batch.p95, batch.p99,
                 *usage_values),
            )

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM batches").fetchone()[0])

    def batches(self) -> Iterator[StoredBatch]:
        """All batches, oldest first, read lazily (the table may be large)."""
        for row in self._db.execute(f"SELECT {_COLUMNS} FROM batches ORDER BY id"):
            received_at, session, stamp, count, avg, p95, p99 = row[:len(_LATENCY_COLUMNS)]
            tokens, cost = row[len(_LATENCY_COLUMNS):-1], row[-1]
            usage = None if tokens[0] is None else Usage(*tokens, cost_usd=cost)
            yield StoredBatch(received_at, MetricsBatch(session, count, avg, p95, p99, stamp, usage))

    def close(self) -> None:
        self._db.close()

"""Self-test check of the metrics receiver: it starts, takes a batch, and shows it to Prometheus."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path

import aiohttp

from server.metrics.app import PATH, ReceiverConfig, start_receiver

log = logging.getLogger(__name__)


def selftest_check() -> str:
    """Start a receiver on a free loopback port with a throwaway database, post, read it back."""
    return asyncio.run(_selftest())


async def _selftest() -> str:
    with tempfile.TemporaryDirectory(prefix="sandra-metrics-") as tmp:
        running = await start_receiver(ReceiverConfig(db_path=Path(tmp) / "selftest.sqlite3", port=0))
        try:
            batch = {"type": "realtime_latency", "sessionId": "self-test", "timestamp": round(time.time() * 1000),
                     "metrics": {"count": 10, "avg": 120.5, "p95": 240.0, "p99": 480.0}}
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5), trust_env=False) as session:
                async with session.post(running.url + PATH, json=batch) as response:
                    if response.status != 200:
                        raise RuntimeError(f"the receiver answered {response.status} to a valid batch")
                async with session.get(running.url + "/metrics") as response:
                    text = await response.text()
        finally:
            await running.close()
    for line in ("sandra_metrics_batches_total 1.0", 'sandra_latency_latest_seconds{stat="p99"} 0.48'):
        if line not in text.splitlines():
            raise RuntimeError(f"/metrics lacks {line!r} after one batch")
    return f"posted one batch to {running.url}, /metrics shows it (p99 480 ms)"

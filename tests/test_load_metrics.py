"""Load on the real metrics receiver: 20,000 valid posts from concurrent clients all counted
exactly, 10,000 malformed ones all refused with 4xx, memory flat; and the per-client rate
limit under a concurrent flood (429 beyond it, every accepted post stored).

Clients are told apart by address: each binds its own loopback address (127.0.0.N), as
separate desktops would arrive from separate hosts.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from _metrics_helpers import ReceiverProcess
from server.metrics.app import MAX_BODY, PATH

pytestmark = pytest.mark.timeout(120)

CLIENTS = 16
VALID = 20_000
MALFORMED = 10_000


def _batch(rng: random.Random, client: int) -> dict:
    p95 = rng.uniform(1, 2000)
    return {"type": "realtime_latency", "sessionId": f"desk-{client}-{rng.randrange(10**6)}",
            "timestamp": 1_700_000_000_000 + rng.randrange(10**9),
            "metrics": {"count": rng.randrange(1, 1000), "avg": rng.uniform(0, p95), "p95": p95,
                        "p99": p95 + rng.uniform(0, 500)}}


def _malformed(rng: random.Random) -> bytes:
    good = _batch(rng, 0)
    choice = rng.randrange(9)
    if choice == 0:
        return b"{not json"
    if choice == 1:
        return b"[" * 20_000 + b"]" * 20_000  # nesting deeper than the JSON parser's recursion
    if choice == 2:
        return b"x" * (MAX_BODY + 1)
    if choice == 3:
        good["metrics"]["p95"], good["metrics"]["p99"] = 900.0, 100.0
    elif choice == 4:
        good["metrics"]["count"] = rng.choice((0, -3, 1.5, "10", None, 10**12))
    elif choice == 5:
        good["type"] = rng.choice(("latency", None, 7))
    elif choice == 6:
        good["sessionId"] = rng.choice(("", "a" * 10_000, "\x00bad", 42))
    elif choice == 7:
        good["metrics"]["avg"] = rng.choice((float("nan"), -1.0, 1e12, "fast", [1]))
    else:
        del good[rng.choice(("type", "sessionId", "metrics"))]
    return json.dumps(good).encode()


def _client(index: int, connections: int = 4) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, local_addr=(f"127.0.0.{index + 2}", 0))
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30), trust_env=False)


async def _post_all(url: str, bodies_by_client: list[list[bytes]], connections: int = 4, first: int = 0) -> Counter:
    """Every client (addresses from number `first` on) posts its bodies over `connections`
    connections at once; returns the status counts."""
    statuses: Counter = Counter()

    async def worker(http: aiohttp.ClientSession, bodies: list[bytes]) -> None:
        while bodies:
            body = bodies.pop()
            async with http.post(url + PATH, data=body, headers={"Content-Type": "application/json"}) as response:
                await response.read()
                statuses[response.status] += 1

    async def client(index: int, bodies: list[bytes]) -> None:
        async with _client(index, connections) as http:
            await asyncio.gather(*(worker(http, bodies) for _ in range(connections)))

    await asyncio.gather(*(client(first + i, list(bodies)) for i, bodies in enumerate(bodies_by_client)))
    return statuses


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _sample(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.split()[1])


async def test_twenty_thousand_counted_ten_thousand_refused_memory_flat(tmp_path: Path) -> None:
    rng = random.Random(int(time.time()))
    db = tmp_path / "load.db"
    receiver = ReceiverProcess(tmp_path, "--db", str(db), "--rate-limit", "0").start()
    try:
        warm = await _post_all(receiver.url, [[json.dumps(_batch(rng, c)).encode() for _ in range(100)]
                                              for c in range(CLIENTS)])
        assert warm == {200: 100 * CLIENTS}
        rss_before = _rss_kb(receiver.proc.pid)
        started = time.monotonic()
        per_client = VALID // CLIENTS
        valid = await _post_all(receiver.url, [[json.dumps(_batch(rng, c)).encode() for _ in range(per_client)]
                                               for c in range(CLIENTS)])
        valid_s = time.monotonic() - started
        started = time.monotonic()
        refused = await _post_all(receiver.url, [[_malformed(rng) for _ in range(MALFORMED // CLIENTS)]
                                                 for _ in range(CLIENTS)])
        refused_s = time.monotonic() - started
        rss_after = _rss_kb(receiver.proc.pid)
        async with aiohttp.ClientSession(trust_env=False) as http:
            async with http.get(receiver.url + "/metrics") as response:
                text = await response.text()
    finally:
        assert receiver.stop() == 0
    print(json.dumps({"valid_posts_per_s": round(VALID / valid_s), "malformed_posts_per_s": round(MALFORMED / refused_s),
                      "rss_before_kb": rss_before, "rss_after_kb": rss_after, "refused": dict(refused)}))
    total = VALID + 100 * CLIENTS
    assert valid == {200: VALID}
    assert sum(refused.values()) == MALFORMED and all(400 <= status < 500 for status in refused), refused
    assert _sample(text, "sandra_metrics_batches_total") == total
    rejected = sum(_sample(text, f'sandra_metrics_rejected_total{{reason="{r}"}}') for r in ("invalid", "too_large"))
    assert rejected == MALFORMED
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM batches").fetchone()[0] == total
    assert rss_after - rss_before < 16_000, f"RSS grew {rss_after - rss_before} kB over {VALID + MALFORMED} posts"


async def test_rate_limit_per_client_under_a_concurrent_flood(tmp_path: Path) -> None:
    rate, clients, each = 20, 4, 150  # bursts of 2 x rate; a flood of `each` posts is far beyond it
    db = tmp_path / "limited.db"
    receiver = ReceiverProcess(tmp_path, "--db", str(db), "--rate-limit", str(rate)).start()
    rng = random.Random(1)
    try:
        started = time.monotonic()
        per_client = await asyncio.gather(*(
            _post_all(receiver.url, [[json.dumps(_batch(rng, i)).encode() for _ in range(each)]], first=i)
            for i in range(clients)))
        elapsed = time.monotonic() - started
    finally:
        assert receiver.stop() == 0
    for statuses in per_client:
        assert set(statuses) == {200, 429}, statuses
        # Each client gets its own bucket: its burst and its rate over the run, never another's share.
        assert 2 * rate <= statuses[200] <= 2 * rate + rate * elapsed + 1, (statuses, elapsed)
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM batches").fetchone()[0] == sum(s[200] for s in per_client)

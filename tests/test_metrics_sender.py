"""MetricsSender against a real aiohttp server on 127.0.0.1 that fails, stalls and recovers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from core.backoff import ReconnectPolicy
from core.metrics_sender import MetricsSender

pytestmark = pytest.mark.timeout(30)


def quick_policy(attempts: int = 3) -> Callable[[], ReconnectPolicy]:
    return lambda: ReconnectPolicy(base=0.01, factor=2.0, cap=0.05, max_attempts=attempts)


@dataclass
class Receiver:
    """A real HTTP receiver whose answers the test scripts: a status per request, then 200."""

    statuses: list[int] = field(default_factory=list)
    received: list[dict] = field(default_factory=list)
    requests: int = 0
    gate: asyncio.Event | None = None  # when set, requests wait for it (a stalled receiver)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.arrived.set()
        payload = await request.json()
        if self.gate is not None:
            await self.gate.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            self.received.append(payload)
            return web.json_response({"success": True, "metricsReceived": True})
        return web.json_response({"error": "scripted"}, status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()
    app = web.Application()
    app.router.add_post("/api/sandra/metrics", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.url = f"http://{host}:{port}/api/sandra/metrics"
    try:
        yield state
    finally:
        await runner.cleanup()


def batch(n: int) -> dict:
    return {"type": "realtime_latency", "sessionId": "s", "timestamp": n, "metrics": {"count": n, "avg": 1.0, "p95": 1.0, "p99": 1.0}}


async def test_fails_then_succeeds_with_one_warning(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.statuses = [503, 500, 429]
    sender = MetricsSender(receiver.url, policy_factory=quick_policy(5))
    with caplog.at_level(logging.INFO, logger="core.metrics_sender"):
        sender.submit(batch(1))
        await asyncio.wait_for(sender.flush(), 5)
    await sender.close()
    assert receiver.requests == 4
    assert receiver.received == [batch(1)]
    assert (sender.stats.sent, sender.stats.failed_posts, sender.stats.dropped) == (1, 3, 0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "503" in warnings[0].getMessage()
    assert any("again after 3 failed posts" in r.getMessage() for r in caplog.records)


async def test_gives_up_after_the_policy_and_goes_on(receiver: Receiver) -> None:
    receiver.statuses = [500, 500, 500]  # the first batch: one post and two retries, all failing
    sender = MetricsSender(receiver.url, policy_factory=quick_policy(2))
    sender.submit(batch(1))
    sender.submit(batch(2))
    await asyncio.wait_for(sender.flush(), 5)
    await sender.close()
    assert receiver.received == [batch(2)]
    assert (sender.stats.sent, sender.stats.dropped) == (1, 1)


async def test_refused_batch_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [400]
    sender = MetricsSender(receiver.url, policy_factory=quick_policy(5))
    sender.submit(batch(1))
    sender.submit(batch(2))
    await asyncio.wait_for(sender.flush(), 5)
    await sender.close()
    assert receiver.requests == 2
    assert receiver.received == [batch(2)]
    assert (sender.stats.sent, sender.stats.dropped, sender.stats.failed_posts) == (1, 1, 0)


async def test_full_queue_drops_the_oldest(receiver: Receiver) -> None:
    receiver.gate = asyncio.Event()
    sender = MetricsSender(receiver.url, max_queue=3, policy_factory=quick_policy())
    sender.submit(batch(0))
    await asyncio.wait_for(receiver.arrived.wait(), 5)  # batch 0 is in flight, the queue is empty
    for n in range(1, 6):
        sender.submit(batch(n))
    assert sender.stats.dropped == 2
    receiver.gate.set()
    await asyncio.wait_for(sender.flush(), 5)
    await sender.close()
    assert [p["timestamp"] for p in receiver.received] == [0, 3, 4, 5]


async def test_submit_never_blocks_while_the_receiver_is_down(unused_tcp_port: int) -> None:
    # Nothing listens on this loopback port: every post is refused at once.
    sender = MetricsSender(f"http://127.0.0.1:{unused_tcp_port}/api/sandra/metrics", max_queue=5,
                           policy_factory=lambda: ReconnectPolicy(base=10.0, cap=10.0, max_attempts=5))
    for n in range(1000):
        sender.submit(batch(n))  # synchronous: it cannot wait on the network
    for _ in range(100):
        await asyncio.sleep(0.02)
        if sender.stats.failed_posts:
            break
    assert sender.stats.failed_posts == 1  # the first post failed; the task now sleeps 10 s before retrying
    await asyncio.wait_for(sender.close(), 2)  # so only a cancelled sleep lets close() finish in time
    assert sender.stats.sent == 0
    # All 1000 are accounted for: 994 overflowed, 5 were queued at close, 1 was in flight.
    assert sender.stats.dropped == 999


async def test_close_cancels_the_task_and_later_submits_are_dropped(receiver: Receiver) -> None:
    sender = MetricsSender(receiver.url, policy_factory=quick_policy())
    sender.submit(batch(1))
    await asyncio.wait_for(sender.flush(), 5)
    tasks_before = {t for t in asyncio.all_tasks() if t.get_name() == "metrics-sender"}
    assert len(tasks_before) == 1
    await sender.close()
    await sender.close()  # twice is fine
    assert all(t.done() for t in tasks_before)
    sender.submit(batch(2))
    assert sender.stats.dropped == 1
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "metrics-sender" and not t.done()]


async def test_unserialisable_batch_is_dropped_not_raised(receiver: Receiver) -> None:
    sender = MetricsSender(receiver.url, policy_factory=quick_policy())
    sender.submit({"metrics": {"avg": float("nan")}})
    sender.submit({"bad": object()})
    sender.submit(batch(3))
    await asyncio.wait_for(sender.flush(), 5)
    await sender.close()
    assert receiver.received == [batch(3)]
    assert sender.stats.dropped == 2


def test_submit_outside_a_loop_drops_quietly() -> None:
    sender = MetricsSender("http://127.0.0.1:9/api/sandra/metrics")
    sender.submit(batch(1))
    assert sender.stats.dropped == 1


def test_bad_queue_size_is_refused() -> None:
    with pytest.raises(ValueError):
        MetricsSender("http://127.0.0.1:9/", max_queue=0)


async def test_credentials_in_the_url_never_reach_the_log(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.statuses = [500]
    url = receiver.url.replace("http://", "http://metrics-user:hunter2-secret@")
    sender = MetricsSender(url, policy_factory=quick_policy(3))
    with caplog.at_level(logging.DEBUG, logger="core.metrics_sender"):
        sender.submit(batch(1))
        await asyncio.wait_for(sender.flush(), 5)
    await sender.close()
    assert receiver.received == [batch(1)]
    assert "HTTP 500" in caplog.text and "127.0.0.1" in caplog.text
    assert "hunter2-secret" not in caplog.text


@pytest.mark.parametrize("url", ["http://[::1:bad/api", "ftp://127.0.0.1/x", "http:///x", "http://127.0.0.1:99999/x", ""])
def test_a_url_that_cannot_work_is_refused_at_once(url: str) -> None:
    with pytest.raises(ValueError, match="metrics URL"):
        MetricsSender(url)

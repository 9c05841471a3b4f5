"""Posts latency batches to a metrics receiver without ever slowing or breaking the call.

`submit()` is synchronous and O(1): it puts the batch in a bounded queue (dropping the
oldest when full) and returns. One background task posts the batches in order with
aiohttp, retrying a failed post after the ReconnectPolicy's delays and giving a batch
up when the policy is exhausted. A failure burst writes one warning, and its end one
info line, so a receiver that is down all day does not flood the log.

Call submit() from the event loop's thread (the engine's): asyncio queues are not
thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from core.backoff import ReconnectPolicy

log = logging.getLogger(__name__)


@dataclass
class SenderStats:
    sent: int = 0
    dropped: int = 0  # queue overflow, given up after retries, refused by the receiver, or submitted after close
    failed_posts: int = 0


class _Refused(Exception):
    """The receiver rejected the batch itself (4xx other than 429): retrying cannot help."""


class _Unavailable(Exception):
    """The receiver answered but could not take the batch now (429, 5xx): worth a retry."""


class MetricsSender:
    def __init__(
        self,
        url: str,
        *,
        max_queue: int = 100,
        policy_factory: Callable[[], ReconnectPolicy] = ReconnectPolicy,
        timeout: float = 5.0,
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.url = url
        self._shown_url = _checked_url(url)
        self.stats = SenderStats()
        self._policy = policy_factory()
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=max_queue)
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failing = 0  # failed posts in the current burst; 0 when the last post went through

    def submit(self, payload: dict[str, Any]) -> None:
        """Queue a batch for sending; never blocks, never raises."""
        if self._closed:
            self.stats.dropped += 1
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.stats.dropped += 1
            log.debug("metrics batch dropped: submit() called outside the event loop")
            return
        if self._queue.full():
            self._queue.get_nowait()
            self._queue.task_done()
            self.stats.dropped += 1
        self._queue.put_nowait(payload)
        if self._task is None:
            self._task = loop.create_task(self._run(), name="metrics-sender")

    async def flush(self) -> None:
        """Wait until every queued batch is sent or given up (tests, orderly shutdown)."""
        await self._queue.join()

    async def close(self) -> None:
        """Stop sending; batches still queued are dropped. Safe to call twice."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            self.stats.dropped += 1

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=self._timeout, trust_env=False) as session:
            while True:
                payload = await self._queue.get()
                try:
                    await self._deliver(session, payload)
                except Exception as exc:  # noqa: BLE001 - a surprise drops one batch, never the sender
                    self.stats.dropped += 1
                    log.warning("metrics batch dropped: %s: %s", type(exc).__name__, exc)
                finally:
                    self._queue.task_done()

    async def _deliver(self, session: aiohttp.ClientSession, payload: dict[str, Any]) -> None:
        try:
            body = json.dumps(payload, allow_nan=False)
        except (TypeError, ValueError) as exc:
            self.stats.dropped += 1
            log.warning("metrics batch dropped: it cannot be sent as JSON (%s)", exc)
            return
        while True:
            try:
                await self._post(session, body)
            except _Refused as exc:
                self.stats.dropped += 1
                log.warning("metrics batch refused by %s: %s", self._shown_url, exc)
                return
            except (_Unavailable, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                self._note_failure(exc)
                delay = self._policy.next_delay()
                if delay is None:
                    self.stats.dropped += 1
                    self._policy.reset()
                    log.debug("metrics batch given up after %d attempts", self._policy.max_attempts)
                    return
                await asyncio.sleep(delay)
                continue
            self.stats.sent += 1
            self._policy.reset()
            if self._failing:
                log.info("metrics reach %s again after %d failed posts", self._shown_url, self._failing)
                self._failing = 0
            return

    async def _post(self, session: aiohttp.ClientSession, body: str) -> None:
        headers = {"Content-Type": "application/json"}
        async with session.post(self.url, data=body, headers=headers) as response:
            if response.status < 300:
                return
            # A little of the answer, for the log; a hostile or broken receiver cannot make us read more.
            detail = (await response.content.read(200)).decode("utf-8", "replace")
            if 400 <= response.status < 500 and response.status != 429:
                raise _Refused(f"HTTP {response.status} {detail}")
            raise _Unavailable(f"HTTP {response.status} {detail}")

    def _note_failure(self, exc: BaseException) -> None:
        self.stats.failed_posts += 1
        if self._failing == 0:
            log.warning("cannot send metrics to %s (%s); retrying quietly", self._shown_url, str(exc) or type(exc).__name__)
        self._failing += 1


def _checked_url(url: str) -> str:
    """Refuse a URL that can never work, at once; return it as log lines show it
    (without a user:password@ part, which must never reach the log)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port out of range
    except ValueError as exc:
        raise ValueError(f"metrics URL is malformed ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("metrics URL must be an http:// or https:// address with a host")
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class MetricsOutlet:
    """Where the telemetry's batches go: a sender made on the first batch, if a URL is set.

    A URL that cannot be used is said once (not every 10 measurements) and then ignored.
    """

    def __init__(self, url: str, on_problem: Callable[[str], None]) -> None:
        self._url = url
        self._on_problem = on_problem
        self._sender: MetricsSender | None = None
        self._refused = False

    def submit(self, payload: dict[str, Any]) -> None:
        if not self._url or self._refused:
            return
        if self._sender is None:
            try:
                self._sender = MetricsSender(self._url)
            except ValueError as exc:
                self._refused = True
                self._on_problem(f"Latency figures are not sent: the metrics URL is not usable ({exc}).")
                return
        self._sender.submit(payload)

    async def close(self) -> None:
        if self._sender is not None:
            await self._sender.close()
            self._sender = None

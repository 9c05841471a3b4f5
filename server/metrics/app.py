"""The metrics receiver's HTTP side: POST /api/sandra/metrics takes one batch, GET /metrics serves Prometheus.

A batch is checked (server/metrics/batch.py), kept in SQLite (store.py) and counted in
the Prometheus view (exposition.py), which is rebuilt from the database at start.

Hostile input gets a short 4xx, never a crash: bodies over 64 KB are refused before
being read in full, each client has a token-bucket rate limit, browsers may post only
from allow-listed origins (CORS preflight answered for those alone, never `*`), and
the server listens on loopback unless told otherwise.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from server.listen import http_url, normalise_origin
from server.metrics.batch import InvalidBatch, MetricsBatch, parse_batch
from server.metrics.exposition import HIGH_P99_MS, LatencyMetrics
from server.metrics.rate_limit import RateLimiter
from server.metrics.store import MetricsStore

log = logging.getLogger(__name__)

PATH = "/api/sandra/metrics"
MAX_BODY = 64 * 1024


@dataclass
class ReceiverConfig:
    db_path: Path
    host: str = "127.0.0.1"
    port: int = 8787
    allow_origins: frozenset[str] = frozenset()
    rate_limit: float = 100.0  # posts a second per client; 0 turns the limit off
    clock: Callable[[], float] = field(default=time.time, repr=False)


class Receiver:
    """The HTTP handlers over one store, one metrics view and one rate limiter."""

    def __init__(self, config: ReceiverConfig, store: MetricsStore) -> None:
        self.config = config
        self.store = store
        self.metrics = LatencyMetrics()
        self.limiter = RateLimiter(config.rate_limit, max(1.0, config.rate_limit * 2))
        # A flood of slow batches must not flood the log: a few warnings a second, the rest counted.
        self._warnings = RateLimiter(1.0, 5.0)
        self._unwarned = 0
        for stored in store.batches():
            self.metrics.observe(stored.batch, stored.received_at)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(PATH, self.post)
        app.router.add_route("OPTIONS", PATH, self.preflight)
        app.router.add_route("*", PATH, self.not_allowed)
        app.router.add_get("/metrics", self.prometheus)
        return app

    def _origin_headers(self, request: web.Request) -> dict[str, str]:
        origin = request.headers.get("Origin")
        if origin and normalise_origin(origin) in self.config.allow_origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {"Vary": "Origin"} if origin else {}

    def _refuse(self, request: web.Request, status: int, reason: str, error: str, *,
                field_name: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
        self.metrics.rejected.labels(reason).inc()
        log.debug("refused a post from %s: %s %s", request.remote, status, error)
        body: dict[str, object] = {"success": False, "error": error}
        if field_name is not None:
            body["field"] = field_name
        response = web.json_response(body, status=status, headers={**self._origin_headers(request), **(headers or {})})
        if reason == "too_large":
            response.force_close()  # the rest of the body is never read: do not reuse the connection
        return response

    async def post(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin")
        if origin and normalise_origin(origin) not in self.config.allow_origins:
            # CORS alone would let any web page post a "simple" request blind; refuse it outright.
            return self._refuse(request, 403, "origin", "this origin may not post metrics")
        wait = self.limiter.acquire(request.remote or "?")
        if wait:
            return self._refuse(request, 429, "rate_limited", "too many posts; slow down",
                                headers={"Retry-After": str(max(1, round(wait)))})
        body = await read_capped(request, MAX_BODY)
        if body is None:
            return self._refuse(request, 413, "too_large", f"body over {MAX_BODY} bytes", field_name="body")
        try:
            batch = parse_batch(json.loads(body))
        except InvalidBatch as exc:
            return self._refuse(request, 400, "invalid", f"{exc.field} {exc.message}", field_name=exc.field)
        except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return self._refuse(request, 400, "invalid", "body is not valid JSON", field_name="body")
        received_at = self.config.clock()
        try:
            self.store.add(batch, received_at)
        except sqlite3.Error as exc:
            log.error("cannot store a metrics batch in %s: %s", self.store.path, exc)
            return web.json_response({"success": False, "error": "storage unavailable"}, status=503)
        self.metrics.observe(batch, received_at)
        if batch.p99 > HIGH_P99_MS:
            self._warn_high_latency(batch)
        return web.json_response({"success": True, "metricsReceived": True}, headers=self._origin_headers(request))

    def _warn_high_latency(self, batch: MetricsBatch) -> None:
        if self._warnings.acquire("high-p99"):
            self._unwarned += 1
            return
        more = f" ({self._unwarned} more such batches since the last warning)" if self._unwarned else ""
        self._unwarned = 0
        log.warning("high latency: session %r reports p99=%.0f ms (p95=%.0f, avg=%.0f, n=%d)%s",
                    batch.session_id, batch.p99, batch.p95, batch.avg, batch.count, more)

    async def preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin", "")
        if normalise_origin(origin) not in self.config.allow_origins:
            return web.json_response({"success": False, "error": "origin not allowed"}, status=403)
        return web.Response(status=204, headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        })

    async def not_allowed(self, request: web.Request) -> web.Response:
        return web.json_response({"success": False, "error": "method not allowed"}, status=405,
                                 headers={"Allow": "POST, OPTIONS"})

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def read_capped(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it is over `limit`: refused by Content-Length before reading,
    and by counting while streaming when the length is not declared (chunked)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class RunningReceiver:
    runner: web.AppRunner
    store: MetricsStore
    host: str
    port: int

    @property
    def url(self) -> str:
        return http_url(self.host, self.port)

    async def close(self) -> None:
        await self.runner.cleanup()
        self.store.close()


async def start_receiver(config: ReceiverConfig) -> RunningReceiver:
    """Open the database, rebuild the figures from it and listen (port 0 picks a free one)."""
    store = MetricsStore(config.db_path)
    try:
        receiver = Receiver(config, store)
        runner = web.AppRunner(receiver.app(), shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, config.host, config.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
    except BaseException:
        store.close()
        raise
    port = runner.addresses[0][1]
    log.info("metrics receiver: %d batches loaded from %s", store.count(), config.db_path)
    return RunningReceiver(runner, store, config.host, port)

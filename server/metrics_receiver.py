"""The metrics receiver: `python main.py metrics-server` takes the desktops' latency batches.

POST /api/sandra/metrics takes one batch in the seed's format (server/metrics_store.py
checks it and keeps it in SQLite); GET /metrics shows what was received in Prometheus
text format, rebuilt from the database at start, so an ordinary Prometheus can scrape it.

Hostile input gets a short 4xx, never a crash: bodies over 64 KB are refused before
being read in full, each client has a token-bucket rate limit, browsers may post only
from allow-listed origins (CORS preflight answered for those alone, never `*`), and
the server listens on loopback unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sqlite3
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from base import paths
from base.errors import ConfigError
from base.logs import setup_logging
from server import listen
from server.listen import http_url, normalise_origin
from server.metrics_store import InvalidBatch, MetricsBatch, MetricsStore, parse_batch

log = logging.getLogger(__name__)

PATH = "/api/sandra/metrics"
MAX_BODY = 64 * 1024
HIGH_P99_MS = 1000.0
STATS = ("avg", "p95", "p99")
REJECT_REASONS = ("invalid", "too_large", "rate_limited", "origin")
# Latency buckets (ms) around what a voice answer feels like: snappy, fine, slow, broken.
BUCKETS_MS = (50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 30000)


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


class LatencyMetrics:
    """The Prometheus view of received batches, in its own registry (no process-global state).

    Labels are only the fixed statistic and reject-reason names: a fleet of desktops
    never multiplies the series (no label per session).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.batches = Counter("sandra_metrics_batches", "Latency batches received", registry=self.registry)
        self.high_p99 = Counter("sandra_metrics_high_p99_batches", f"Batches reporting p99 over {HIGH_P99_MS:g} ms",
                                registry=self.registry)
        self.latest = Gauge("sandra_latency_latest_ms", "Latest reported latency statistic (ms)", ["stat"],
                            registry=self.registry)
        self.reported = Histogram("sandra_latency_reported_ms", "Distribution of reported latency statistics (ms)",
                                  ["stat"], buckets=BUCKETS_MS, registry=self.registry)
        self.last_received = Gauge("sandra_metrics_last_batch_timestamp_seconds", "When the latest batch arrived",
                                   registry=self.registry)
        self.rejected = Counter("sandra_metrics_rejected", "Posts refused since the receiver started", ["reason"],
                                registry=self.registry)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)  # present at 0 from the start, so alerts can use rate()

    def observe(self, batch: MetricsBatch, received_at: float) -> None:
        self.batches.inc()
        if batch.p99 > HIGH_P99_MS:
            self.high_p99.inc()
        for stat in STATS:
            value = getattr(batch, stat)
            self.latest.labels(stat).set(value)
            self.reported.labels(stat).observe(value)
        self.last_received.set(received_at)

    def render(self) -> bytes:
        return generate_latest(self.registry)


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


async def _serve(config: ReceiverConfig) -> None:
    running = await start_receiver(config)
    print(f"sandra metrics receiver listening on {running.url}{PATH} (Prometheus: {running.url}/metrics, "
          f"database: {config.db_path})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl+C arrives as KeyboardInterrupt instead
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await running.close()
        log.info("metrics receiver stopped")


REMOTE_RISK = "anyone who can reach it may post metrics"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sandra metrics-server",
                                     description="Receive Sandra's latency batches and serve them to Prometheus.")
    listen.add_arguments(parser, default_port=8787, remote_risk=REMOTE_RISK)
    parser.add_argument("--db", type=Path, help="SQLite file (default: metrics.sqlite3 in the user data dir)")
    parser.add_argument("--rate-limit", type=float, default=100.0, metavar="N",
                        help="posts a second allowed per client, bursts of 2N (default 100; 0 = no limit)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more detail on the console")
    return parser


def config_from_args(args: argparse.Namespace) -> ReceiverConfig:
    origins = listen.check(args)
    if args.rate_limit < 0:
        raise ConfigError("--rate-limit must be 0 (no limit) or more")
    db_path = args.db if args.db is not None else paths.data_dir() / "metrics.sqlite3"
    return ReceiverConfig(db_path=db_path, host=args.host, port=args.port, allow_origins=origins,
                          rate_limit=args.rate_limit)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, log_file="metrics-server.log")
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"sandra metrics-server: {exc}", file=sys.stderr)
        return 2
    if warning := listen.remote_warning(config.host, REMOTE_RISK):
        print(f"sandra metrics-server: {warning}", file=sys.stderr)
    try:
        asyncio.run(_serve(config))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"sandra metrics-server: cannot listen on {config.host}:{config.port} or open {config.db_path}: {exc}",
              file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"sandra metrics-server: the database {config.db_path} cannot be used: {exc}", file=sys.stderr)
        return 1
    return 0


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
    for line in ("sandra_metrics_batches_total 1.0", 'sandra_latency_latest_ms{stat="p99"} 480.0'):
        if line not in text.splitlines():
            raise RuntimeError(f"/metrics lacks {line!r} after one batch")
    return f"posted one batch to {running.url}, /metrics shows it (p99 480 ms)"

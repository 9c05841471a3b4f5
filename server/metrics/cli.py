"""`sandra metrics-server`: run the metrics receiver until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sqlite3
import sys
from pathlib import Path

from base import paths
from base.errors import ConfigError
from base.logs import setup_logging
from server import listen
from server.metrics.app import PATH, ReceiverConfig, start_receiver

log = logging.getLogger(__name__)


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

"""`sandra serve`: run the local realtime server until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from base.errors import ConfigError
from base.logs import register_secret, setup_logging
from server import listen
from server.realtime.app import ServerOptions
from server.realtime.call import Mode
from server.realtime.faults import Faults
from server.realtime.runner import start_server
from server.realtime.server_key import resolve_server_key

log = logging.getLogger(__name__)


REMOTE_RISK = "anyone with the server key can make calls"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandra serve",
        description="The local realtime server: OpenAI's Realtime API over WebRTC, offline. "
                    "The server key comes from SANDRA_SERVER_KEY, or is generated and written to a file.",
    )
    listen.add_arguments(parser, default_port=8765, remote_risk=REMOTE_RISK)
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.ASSISTANT.value,
                        help="assistant (default): recognise, answer and speak; echo: send the audio back")
    parser.add_argument("--max-calls", type=int, default=8, help="concurrent calls before 503 (default 8)")
    parser.add_argument("--quiet-audio", action="store_true",
                        help="send no audio packets while not answering, as a provider with DTX does "
                             "(default: a steady stream, silence between answers)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more detail on the console")
    faults = parser.add_argument_group("fault injection (tests only)")
    faults.add_argument("--fault-drop-after", type=float, metavar="SECONDS", help="end each call after SECONDS")
    faults.add_argument("--fault-stall-datachannel", action="store_true", help="send no events")
    faults.add_argument("--fault-sdp-delay-ms", type=int, default=0, metavar="MS", help="delay each SDP answer")
    faults.add_argument("--fault-token-status", type=int, metavar="STATUS", help="fail token requests with STATUS")
    faults.add_argument("--fault-token-count", type=int, default=0, metavar="N",
                        help="how many token requests fail (with --fault-token-status)")
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    try:
        args.allow_origin = sorted(listen.check(args))
    except ConfigError as exc:
        parser.error(str(exc))
    if args.max_calls < 1:
        parser.error("--max-calls must be at least 1")
    if args.fault_token_status is not None and not 400 <= args.fault_token_status <= 599:
        parser.error("--fault-token-status must be an HTTP error status (400-599)")
    if args.fault_drop_after is not None and args.fault_drop_after <= 0:
        parser.error("--fault-drop-after must be positive")
    if args.fault_sdp_delay_ms < 0 or args.fault_token_count < 0:
        parser.error("fault counts and delays cannot be negative")


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    setup_logging(args.verbose, log_file="server.log")
    try:
        key = resolve_server_key(os.environ)
    except (ValueError, OSError) as exc:
        print(f"sandra serve: {exc}", file=sys.stderr)
        return 2
    register_secret(key.value)
    if key.file is not None:
        print(f"server key written to {key.file} (set SANDRA_SERVER_KEY to choose your own)", flush=True)
    if warning := listen.remote_warning(args.host, REMOTE_RISK):
        print(warning, file=sys.stderr, flush=True)
    options = ServerOptions(
        server_key=key.value,
        mode=Mode(args.mode),
        max_calls=args.max_calls,
        allow_origins=tuple(args.allow_origin),
        quiet_audio=args.quiet_audio,
        faults=Faults(drop_after_s=args.fault_drop_after, stall_datachannel=args.fault_stall_datachannel,
                      sdp_delay_ms=args.fault_sdp_delay_ms, token_status=args.fault_token_status,
                      token_count=args.fault_token_count),
    )
    try:
        return asyncio.run(_serve(args.host, args.port, options))
    except KeyboardInterrupt:
        return 130


async def _serve(host: str, port: int, options: ServerOptions) -> int:
    try:
        running = await start_server(host, port, options)
    except OSError as exc:
        print(f"sandra serve: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    log.info("serving %s in %s mode (max %d calls)", running.base_url, options.mode.value, options.max_calls)
    print(f"listening on {running.base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        calls = len(running.server.calls)
        await running.stop()
        log.info("stopped; closed %d open call(s)", calls)
    return 0

"""Where Sandra's servers listen, and which web pages may call them.

Both servers (the local realtime server and the metrics receiver) listen on loopback
unless the operator insists, print a warning when they don't, and take an exact CORS
allow-list, never a wildcard: one set of rules, here.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from urllib.parse import urlsplit

from base.errors import ConfigError
from base.loopback_ice import is_loopback_host


def add_arguments(parser: argparse.ArgumentParser, *, default_port: int, remote_risk: str) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=default_port,
                        help=f"port to listen on (default {default_port}; 0 picks a free one)")
    parser.add_argument("--allow-remote", action="store_true",
                        help=f"allow listening on a non-loopback address ({remote_risk})")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="a web origin allowed to call from a browser (repeatable; default none; never '*')")


def check(args: argparse.Namespace) -> frozenset[str]:
    """Validate --host/--port/--allow-remote; return the normalised --allow-origin list."""
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: a port is a number from 0 to 65535")
    if not is_loopback_host(args.host) and not args.allow_remote:
        raise ConfigError(f"--host {args.host} is not a loopback address: add --allow-remote to listen there")
    return parse_origins(args.allow_origin)


def remote_warning(host: str, remote_risk: str) -> str | None:
    if is_loopback_host(host):
        return None
    return f"WARNING: listening on {host}, reachable from other machines: {remote_risk}"


def normalise_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def parse_origins(values: Iterable[str]) -> frozenset[str]:
    """Allow-list entries as browsers send them: scheme://host[:port]; never a wildcard."""
    origins = set()
    for value in values:
        parts = urlsplit(value.strip())
        if "*" in value or parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") \
                or parts.query or parts.fragment:
            raise ConfigError(f"--allow-origin {value!r}: give an exact origin such as https://app.example.com "
                              "(scheme, host and optional port; no wildcard, no path)")
        origins.add(normalise_origin(value))
    return frozenset(origins)


def http_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

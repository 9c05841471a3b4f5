"""The ICE plan: which STUN and TURN server each connection attempt hands to aiortc.

aiortc passes aioice only the FIRST STUN URL and the FIRST usable TURN URL of its
configuration, so the seed's "7 STUN servers in a fallback chain" does nothing by
itself. This module makes the chain real in two halves:

- `probe_stun` asks every STUN server at once and returns the first that answers, so
  the one URL aiortc uses is one that works right now;
- `IcePlan` (pure, no I/O) picks the configuration per attempt: STUN only at first,
  then TURN over udp, tcp and tls in turn as attempts keep failing to connect.

A provider on a loopback address gets no ICE servers at all; the caller then also
holds `base.loopback_ice.acquire_loopback_only()` for the call.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aioice import stun
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer

from base.errors import ConfigError
from base.logs import register_secret

log = logging.getLogger(__name__)

# The seed widget's list, in its order.
DEFAULT_STUN_URLS: tuple[str, ...] = (
    "stun:stun.l.google.com:19302",
    "stun:stun1.l.google.com:19302",
    "stun:stun2.l.google.com:19302",
    "stun:stun3.l.google.com:19302",
    "stun:stun4.l.google.com:19302",
    "stun:stunserver.org:3478",
    "stun:stun.stunprotocol.org:3478",
)

ENV_TURN_SERVER = "SANDRA_TURN_SERVER"
ENV_TURN_USERNAME = "SANDRA_TURN_USERNAME"
ENV_TURN_PASSWORD = "SANDRA_TURN_PASSWORD"

_STUN_URL = re.compile(r"stun:(?P<host>[^?:/\s]+)(?::(?P<port>[0-9]{1,5}))?")
# What aiortc's TURN URL pattern accepts as a host: a name or IPv4, no port, no scheme.
_TURN_HOST = re.compile(r"[A-Za-z0-9.-]+")

# Name lookups block; a dead resolver can hold a thread for many seconds. Their own
# small pool keeps that from starving the loop's default executor (speech work runs there).
_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stun-dns")


@dataclass(frozen=True)
class TurnServer:
    """A TURN server and its credential; the password never shows in repr or logs."""

    host: str
    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if not _TURN_HOST.fullmatch(self.host):
            raise ConfigError(
                f"The TURN server {self.host!r} is not a host name or IPv4 address "
                "(give just the host, e.g. turn.example.com, without turn: or a port)."
            )
        if not self.username or not self.password:
            raise ConfigError("A TURN server needs both a username and a password.")
        register_secret(self.password)

    def urls(self) -> tuple[str, str, str]:
        """The three transports, in the order a failing call tries them: udp, tcp, tls."""
        return (
            f"turn:{self.host}:3478?transport=udp",
            f"turn:{self.host}:3478?transport=tcp",
            f"turns:{self.host}:5349?transport=tcp",
        )


def resolve_turn(
    environ: Mapping[str, str],
    server: str | None = None,
    username: str | None = None,
    password: str | None = None,
) -> TurnServer | None:
    """The TURN server to use: each SANDRA_TURN_* variable wins over the matching setting.

    None when no server is named. A server without username or password raises
    ConfigError, because silently calling without the TURN the user asked for would
    fail later behind NATs with no hint why.
    """
    host = (environ.get(ENV_TURN_SERVER) or server or "").strip()
    if not host:
        return None
    user = environ.get(ENV_TURN_USERNAME) or username or ""
    secret = environ.get(ENV_TURN_PASSWORD) or password or ""
    return TurnServer(host=host, username=user, password=secret)


@dataclass(frozen=True)
class IcePlan:
    """Which RTCConfiguration each attempt uses. Pure: the caller supplies the probe result.

    `failed_attempts` counts the attempts in a row that never reached 'connected'
    (a call that connected and later dropped does not count): 0 → the probed STUN
    server only; 1 → plus TURN over udp; 2 → over tcp; 3 and more → over tls.
    Without a TURN server every attempt is STUN only.
    """

    turn: TurnServer | None = None
    loopback: bool = False
    stun_urls: tuple[str, ...] = DEFAULT_STUN_URLS

    @property
    def needs_probe(self) -> bool:
        return not self.loopback and bool(self.stun_urls)

    def turn_url(self, failed_attempts: int) -> str | None:
        if self.loopback or self.turn is None or failed_attempts < 1:
            return None
        urls = self.turn.urls()
        return urls[min(failed_attempts, len(urls)) - 1]

    def configuration(self, failed_attempts: int, stun_url: str | None) -> RTCConfiguration:
        """The configuration for this attempt; `stun_url` is what `probe_stun` found (None: none answered)."""
        if failed_attempts < 0:
            raise ValueError(f"failed_attempts must be >= 0, got {failed_attempts}")
        servers: list[RTCIceServer] = []
        if not self.loopback:
            # A STUN server that did not answer would only stall gathering until aioice gives up on it.
            if stun_url:
                servers.append(RTCIceServer(urls=stun_url))
            turn_url = self.turn_url(failed_attempts)
            if turn_url and self.turn:
                servers.append(RTCIceServer(urls=turn_url, username=self.turn.username, credential=self.turn.password))
        return RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)

    def describe(self, failed_attempts: int, stun_url: str | None) -> str:
        """One log line naming the servers (never the credential)."""
        if self.loopback:
            return "loopback provider: no STUN/TURN, loopback host candidates only"
        turn_url = self.turn_url(failed_attempts)
        return f"STUN {stun_url or 'none answered'}; TURN {turn_url or 'not used'}"


def parse_stun_url(url: str) -> tuple[str, int]:
    """(host, port) of a `stun:HOST[:PORT]` URL; the port defaults to 3478."""
    match = _STUN_URL.fullmatch(url.strip())
    if not match:
        raise ValueError(f"not a stun: URL: {url!r}")
    port = int(match.group("port") or 3478)
    if not 0 < port < 65536:
        raise ValueError(f"bad port in {url!r}")
    return match.group("host"), port


class _BindingClient(asyncio.DatagramProtocol):
    """Waits for one valid binding success that matches our transaction id."""

    def __init__(self, transaction_id: bytes) -> None:
        self.transaction_id = transaction_id
        self.answered: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            message = stun.parse_message(data)
        except Exception:  # garbage from the network is not our problem, just not an answer
            log.debug("STUN probe: malformed reply from %s ignored", addr)
            return
        mapped = message.attributes.get("XOR-MAPPED-ADDRESS") or message.attributes.get("MAPPED-ADDRESS")
        if (
            message.message_method == stun.Method.BINDING
            and message.message_class == stun.Class.RESPONSE
            and message.transaction_id == self.transaction_id
            and mapped
            and not self.answered.done()
        ):
            self.answered.set_result(mapped)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: keep waiting; the deadline ends it.
        log.debug("STUN probe: %s", exc)


async def _resolve(host: str, port: int) -> tuple[str, int]:
    loop = asyncio.get_running_loop()
    infos = await loop.run_in_executor(
        _resolver, lambda: socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    )
    address = infos[0][4]
    return address[0], address[1]


# Retransmit in case one datagram is lost; the caller's deadline bounds the whole probe.
_RETRANSMIT_AFTER = (0.25, 0.5)


async def _ask(url: str) -> str:
    """Return `url` once its server answers a binding request; runs until cancelled otherwise."""
    host, port = parse_stun_url(url)
    address = await _resolve(host, port)
    loop = asyncio.get_running_loop()
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _BindingClient(request.transaction_id), remote_addr=address
    )
    try:
        data = bytes(request)
        transport.sendto(data)
        for wait in _RETRANSMIT_AFTER:
            try:
                await asyncio.wait_for(asyncio.shield(protocol.answered), wait)
                break
            except asyncio.TimeoutError:
                transport.sendto(data)
        mapped = await protocol.answered
        log.debug("STUN probe: %s answered, our address %s:%s", url, *mapped)
        return url
    finally:
        transport.close()


async def probe_stun(urls: Sequence[str], timeout: float = 1.0) -> str | None:
    """The first URL whose server answers a binding request within `timeout`, or None.

    Every server is asked at once; the others are cancelled as soon as one answers.
    Bad URLs and names that do not resolve count as silent.
    """
    if not urls:
        return None
    started = time.monotonic()
    tasks = {asyncio.ensure_future(_ask(url)): url for url in urls}
    winner: str | None = None
    try:
        pending: set[asyncio.Future[str]] = set(tasks)
        deadline = started + timeout
        while pending and winner is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            done, pending = await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:
                    winner = task.result()
                    break
                log.debug("STUN probe: %s failed: %s", tasks[task], task.exception())
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.monotonic() - started
    if winner:
        log.info("STUN probe: using %s (answered in %.0f ms)", winner, elapsed * 1000)
    else:
        log.warning("STUN probe: none of %d servers answered within %.1f s", len(urls), timeout)
    return winner

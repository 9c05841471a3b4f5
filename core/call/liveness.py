"""Is the peer still there? Fast, provider-independent liveness from the transport itself.

Every WebRTC peer must answer ICE consent checks (RFC 7675: STUN binding requests on
the selected pair), whatever media it sends. aioice sends them every 5 s and gives up
after 6 failures (~30 s); here each connection gets its own faster check, without
touching aioice's module globals:

- every PROBE_INTERVAL_S, send one consent probe per nominated pair — exactly what
  aioice's ``Connection.query_consent`` sends, with no retransmission, so it fails after
  ``stun.RETRY_RTO``;
- any packet the connection receives (audio, RTCP, DTLS/SCTP) and any probe reply is
  proof of life;
- nothing at all for LOST_AFTER_S means the peer is lost;
- sooner, when the peer's own host says nobody listens there any more: ICMP "port
  unreachable" for what we send (its program died or was killed; a network drop sends no
  such thing) for REFUSED_FOR_S with no sign of life in between. Linux reports these on
  an unconnected UDP socket only with IP_RECVERR, and then queues them: the prober reads
  that queue itself, so the socket never stays readable with errors nobody took.

A 1.5 s stall of the link is not a loss (probing every 0.25 s rather than 0.5 s keeps a
lost probe from stretching a short silence past the limit: FACTS.md), and a stall of our
own event loop is not held against the peer.

``LivenessPolicy`` is the pure decision (time passed in); ``start()`` is the thin asyncio
prober around it, hooked into aiortc/aioice private pieces that are checked up front:
if one changed, ``start()`` raises ``LivenessUnavailable`` naming it.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aioice
import aiortc
from aioice import stun
from aioice.ice import CandidatePair, Connection, StunProtocol
from aiortc import RTCPeerConnection
from aiortc.rtcicetransport import RTCIceTransport

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 0.25
LOST_AFTER_S = 2.5
# Our own sleep may overrun by this much before the tick is treated as our stall, not the peer's.
STALL_TOLERANCE_S = 0.25
# How long a probe may take to be answered: aioice's single-try STUN timeout (stun.RETRY_RTO).
ANSWER_WINDOW_S = 0.5
# Refusals (ICMP port unreachable from the peer's address) for this long, nothing else in
# between: the peer's socket is gone. Three probes' worth, so one stray ICMP decides nothing.
REFUSED_FOR_S = 0.5


# Where Linux reports ICMP errors on an unconnected UDP socket, per address family.
_RECVERR = {socket.AF_INET: (socket.IPPROTO_IP, getattr(socket, "IP_RECVERR", 11)),
            socket.AF_INET6: (socket.IPPROTO_IPV6, getattr(socket, "IPV6_RECVERR", 25))}
_ERRQUEUE_READ = getattr(socket, "MSG_ERRQUEUE", 0x2000) | socket.MSG_DONTWAIT


class LivenessUnavailable(RuntimeError):
    """aiortc/aioice no longer have a private piece the liveness check hooks into."""


@dataclass(frozen=True)
class LivenessTimings:
    probe_interval_s: float = PROBE_INTERVAL_S
    lost_after_s: float = LOST_AFTER_S
    stall_tolerance_s: float = STALL_TOLERANCE_S
    answer_window_s: float = ANSWER_WINDOW_S
    refused_for_s: float = REFUSED_FOR_S

    def __post_init__(self) -> None:
        if min(self.probe_interval_s, self.stall_tolerance_s, self.answer_window_s, self.refused_for_s) <= 0:
            raise ValueError(f"liveness timings must be positive: {self}")
        # Otherwise a peer could be declared lost before a single probe had its chance.
        if self.lost_after_s <= self.probe_interval_s + self.answer_window_s:
            raise ValueError(f"lost_after_s must exceed one probe interval plus the answer window: {self}")


@dataclass(frozen=True)
class Lost:
    silent_s: float  # since the last packet or probe reply
    unanswered_probes: int
    refused: bool = False  # the peer's host said nothing listens there any more

    def describe(self) -> str:
        if self.refused:
            return (f"the peer stopped: its address refused {self.unanswered_probes} connectivity probes "
                    f"({self.silent_s:.1f} s without a packet)")
        return (f"the peer went silent: no packet and no answer to {self.unanswered_probes} "
                f"connectivity probes for {self.silent_s:.1f} s")


class LivenessPolicy:
    """When silence means the peer is gone. Pure: every method takes the current time.

    Lost when, at a check, nothing came for ``lost_after_s`` and at least one probe sent
    in that silence has had ``answer_window_s`` to be answered. A check that comes more
    than ``probe_interval_s + stall_tolerance_s`` after the previous one is not judged:
    the checker itself was stalled, and packets that arrived meanwhile may still be
    queued behind it; nor is any check until a probe sent after that stall has had its
    answer window (probes from before it proved nothing about the peer since).
    Lost sooner when refusals kept coming for ``refused_for_s`` with no sign of life.
    """

    def __init__(self, now: float, timings: LivenessTimings = LivenessTimings()) -> None:
        self.timings = timings
        self.stalled_checks = 0
        self._last_alive = now
        self._last_check = now
        self._first_probe_in_silence: float | None = None
        self._probes_in_silence = 0
        self._refused_since: float | None = None
        self._refused_last = 0.0

    def proof_of_life(self, now: float) -> None:
        if now >= self._last_alive:
            self._last_alive = now
            self._first_probe_in_silence = None
            self._probes_in_silence = 0
            self._refused_since = None

    def refused(self, now: float) -> None:
        """The peer's address answered something we sent with "port unreachable"."""
        if self._refused_since is None:
            self._refused_since = now
        self._refused_last = now

    def probe_sent(self, now: float) -> None:
        if self._first_probe_in_silence is None:
            self._first_probe_in_silence = now
        self._probes_in_silence += 1

    def silent_s(self, now: float) -> float:
        return now - self._last_alive

    def check(self, now: float) -> Lost | None:
        t = self.timings
        since_last_check = now - self._last_check
        self._last_check = now
        if since_last_check > t.probe_interval_s + t.stall_tolerance_s:
            self.stalled_checks += 1
            self._first_probe_in_silence = None
            return None
        silent = self.silent_s(now)
        refused_since = self._refused_since
        if refused_since is not None and self._refused_last - refused_since >= t.refused_for_s:
            return Lost(silent_s=silent, unanswered_probes=self._probes_in_silence, refused=True)
        if silent < t.lost_after_s:
            return None
        first_probe = self._first_probe_in_silence
        if first_probe is None or now - first_probe < t.answer_window_s:
            return None
        return Lost(silent_s=silent, unanswered_probes=self._probes_in_silence)


def _versions() -> str:
    return f"aiortc {getattr(aiortc, '__version__', '?')} / aioice {getattr(aioice, '__version__', '?')}"


def _missing(piece: str) -> LivenessUnavailable:
    return LivenessUnavailable(
        f"{_versions()}: {piece} is missing or changed; the transport liveness check hooks into it "
        "(aiortc is pinned to 1.16.x): update core/call/liveness.py for this version")


def _ice_transport(pc: RTCPeerConnection) -> RTCIceTransport:
    """The peer connection's ICE transport: the data channel's, else the first transceiver's.

    With BUNDLE (aiortc's default, and what every Realtime provider answers) audio and
    data share this one transport.
    """
    if pc.sctp is not None:
        return pc.sctp.transport.transport
    for transceiver in pc.getTransceivers():
        return transceiver.receiver.transport.transport
    raise ValueError("the peer connection has no transport yet: start liveness once it is connected")


def _checked_connection(pc: RTCPeerConnection) -> Connection:
    """The aioice Connection behind pc, after checking every private piece the prober uses."""
    ice = _ice_transport(pc)
    conn = getattr(ice, "_connection", None)
    if not isinstance(conn, Connection):
        raise _missing("RTCIceTransport._connection (an aioice Connection)")
    nominated = getattr(conn, "_nominated", None)
    if not isinstance(nominated, dict):
        raise _missing("Connection._nominated (a dict of CandidatePair)")
    if not callable(getattr(conn, "build_request", None)) or \
            list(inspect.signature(conn.build_request).parameters) != ["pair", "nominate"]:
        raise _missing("Connection.build_request(pair, nominate)")
    if not callable(getattr(conn, "data_received", None)) or \
            list(inspect.signature(conn.data_received).parameters) != ["data", "component"]:
        raise _missing("Connection.data_received(data, component)")
    request = getattr(StunProtocol, "request", None)
    if not callable(request) or not {"integrity_key", "retransmissions"} <= set(inspect.signature(request).parameters):
        raise _missing("StunProtocol.request(…, integrity_key, retransmissions)")
    error = getattr(stun, "TransactionError", None)
    if not (isinstance(error, type) and issubclass(error, Exception)):
        raise _missing("aioice.stun.TransactionError")
    rto = getattr(stun, "RETRY_RTO", None)
    if not isinstance(rto, (int, float)) or isinstance(rto, bool):
        raise _missing("aioice.stun.RETRY_RTO")
    if not isinstance(getattr(CandidatePair, "remote_addr", None), property):
        raise _missing("CandidatePair.remote_addr")
    if not nominated:
        raise ValueError("ICE has not selected a pair yet: start liveness once the connection is up")
    for pair in nominated.values():
        protocol = getattr(pair, "protocol", None)
        if not isinstance(protocol, StunProtocol):
            raise _missing("CandidatePair.protocol (a StunProtocol)")
        # Packets reach data_received through the protocol's receiver: wrapping the
        # instance's method only sees them if that receiver is this very connection.
        if getattr(protocol, "receiver", None) is not conn:
            raise _missing("StunProtocol.receiver (the Connection that gets its packets)")
    if not isinstance(getattr(conn, "remote_password", None), str):
        raise _missing("Connection.remote_password")
    return conn


class Liveness:
    """One connection's running check; made by start(). stop() is idempotent."""

    def __init__(self, conn: Connection, policy: LivenessPolicy, on_lost: Callable[[str], None]) -> None:
        self._conn = conn
        self._policy = policy
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._probes: set[asyncio.Task[None]] = set()
        self._stopped = False
        self.lost: Lost | None = None
        self.probes_sent = 0
        self.probes_answered = 0
        self._had_own_data_received = "data_received" in vars(conn)
        self._previous_data_received: Any = vars(conn).get("data_received")
        original = conn.data_received

        def data_received(data: bytes, component: int) -> None:
            original(data, component)
            if not self._stopped:
                self._policy.proof_of_life(self._loop.time())

        self._data_received = data_received
        # On the instance only: other connections in the process keep the class's method.
        conn.data_received = data_received  # type: ignore[method-assign]
        self._refusals = [watch for pair in conn._nominated.values()
                          if (watch := _RefusalWatch.install(pair, self._refused)) is not None]
        self._task = self._loop.create_task(self._run(), name="liveness")

    def _refused(self) -> None:
        if not self._stopped:
            self._policy.refused(self._loop.time())

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if asyncio.current_task() is not self._task:  # from _declare, the task is ending anyway
            self._task.cancel()
        for probe in self._probes:
            probe.cancel()
        for watch in self._refusals:
            watch.remove()
        # Unwrap only if nobody wrapped on top of us; else ours stays, as a pass-through.
        if vars(self._conn).get("data_received") is self._data_received:
            if self._had_own_data_received:
                self._conn.data_received = self._previous_data_received  # type: ignore[method-assign]
            else:
                del self._conn.data_received

    async def _run(self) -> None:
        interval = self._policy.timings.probe_interval_s
        while True:
            verdict = self._policy.check(self._loop.time())
            if verdict is not None:
                self._declare(verdict)
                return
            self._probe_nominated()
            await asyncio.sleep(interval)

    def _declare(self, lost: Lost) -> None:
        self.lost = lost
        self.stop()
        reason = lost.describe()
        log.info("peer lost: %s", reason)
        try:
            self._on_lost(reason)
        except Exception:
            log.exception("on_lost callback failed")

    def _probe_nominated(self) -> None:
        # Re-read every tick: a pair probed after the connection closed it raises inside asyncio.
        for pair in list(self._conn._nominated.values()):
            self._policy.probe_sent(self._loop.time())
            self.probes_sent += 1
            task = self._loop.create_task(self._probe(pair), name="liveness-probe")
            self._probes.add(task)
            task.add_done_callback(self._probes.discard)

    async def _probe(self, pair: CandidatePair) -> None:
        conn = self._conn
        password = conn.remote_password
        if password is None:  # the connection was torn down under us
            return
        try:
            # What aioice's query_consent sends, but a single try.
            await pair.protocol.request(conn.build_request(pair, nominate=False), pair.remote_addr,
                                        integrity_key=password.encode("utf8"), retransmissions=0)
        except stun.TransactionError:
            return  # unanswered (or refused): no proof of life
        except Exception as exc:  # the pair's socket went away between ticks
            log.debug("liveness probe failed: %r", exc)
            return
        if not self._stopped:
            self.probes_answered += 1
            self._policy.proof_of_life(self._loop.time())


class _RefusalWatch:
    """ICMP "port unreachable" from one pair's remote address, read off its socket's error queue.

    Only where the OS has IP_RECVERR (Linux); elsewhere, or if the socket cannot be
    reached, install() returns None and the silence rule alone decides."""

    def __init__(self, protocol: StunProtocol, errors: socket.socket, option: tuple[int, int],
                 remote: tuple[Any, ...], on_refused: Callable[[], None]) -> None:
        self._protocol = protocol
        self._errors = errors
        self._option = option
        self._remote = remote[:2]
        self._on_refused = on_refused
        original = protocol.error_received

        def error_received(exc: Exception) -> None:
            original(exc)
            self._drain()

        self._hook = error_received
        protocol.error_received = error_received  # type: ignore[method-assign]

    @classmethod
    def install(cls, pair: CandidatePair, on_refused: Callable[[], None]) -> _RefusalWatch | None:
        transport = getattr(pair.protocol, "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        option = _RECVERR.get(sock.family) if sock is not None else None
        if option is None or not hasattr(socket, "MSG_ERRQUEUE"):
            log.debug("no ICMP refusal check here: the peer's loss is found by its silence alone")
            return None
        try:
            # A second handle on the same socket: asyncio's wrapper does not offer recvmsg.
            errors = socket.socket(fileno=os.dup(sock.fileno()))
            errors.setsockopt(*option, 1)
        except OSError as exc:
            log.debug("no ICMP refusal check (%s)", exc)
            return None
        return cls(pair.protocol, errors, option, pair.remote_addr, on_refused)

    def _drain(self) -> None:
        """Read every queued error (else the socket stays readable for ever) and report refusals
        that came back from the peer's own address."""
        while True:
            try:
                _, ancillary, _, addr = self._errors.recvmsg(1, 512, _ERRQUEUE_READ)
            except OSError:  # empty (EAGAIN), or the socket closed under us
                return
            for _, _, data in ancillary:  # struct sock_extended_err: ee_errno first
                if len(data) >= 4 and struct.unpack_from("=I", data)[0] == errno.ECONNREFUSED \
                        and tuple(addr[:2]) == tuple(self._remote):
                    self._on_refused()

    def remove(self) -> None:
        if vars(self._protocol).get("error_received") is self._hook:
            del self._protocol.error_received
        try:
            self._errors.setsockopt(*self._option, 0)  # also empties the queue (Linux)
        except OSError:
            pass
        self._errors.close()


def start(pc: RTCPeerConnection, on_lost: Callable[[str], None],
          timings: LivenessTimings | None = None) -> Liveness:
    """Watch a connected peer connection; on_lost(reason) is called once if the peer goes silent.

    Call from the running event loop once ICE is connected. Raises LivenessUnavailable if
    aiortc/aioice changed under the hook, ValueError if the connection is not up yet.
    The check stops itself after reporting a loss; call stop() when the call ends, before
    closing pc. The answer window follows aioice's own single-try STUN timeout.
    """
    conn = _checked_connection(pc)
    if timings is None:
        timings = LivenessTimings(answer_window_s=float(stun.RETRY_RTO))
    loop = asyncio.get_running_loop()
    liveness = Liveness(conn, LivenessPolicy(loop.time(), timings), on_lost)
    log.debug("liveness started: probe every %.2f s, lost after %.1f s", timings.probe_interval_s,
              timings.lost_after_s)
    return liveness

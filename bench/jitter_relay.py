"""A seeded loopback UDP relay that adds jitter and loss to RTP between two peers.

Each peer's SDP is rewritten so its 127.0.0.1 host candidate points at a relay socket
that stands for it; the relay forwards between the two sockets. Only RTP is delayed
(uniform 0..max_delay_s) and dropped (drop_rate); STUN, DTLS and RTCP pass untouched
so ICE, the handshake and receiver reports behave. Packets are told apart by their
first byte (RFC 7983: 0-3 STUN, 20-63 DTLS, 128-191 RTP/RTCP) and, for RTP/RTCP, by
the second byte (RFC 5761: 192-223 is an RTCP packet type). Seeded per direction, so
runs compare; closes itself after lifetime_s. pause() drops every packet both ways, as a
link that went dead, until resume().
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from dataclasses import dataclass, field
from typing import Optional, cast

log = logging.getLogger(__name__)

_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ udp \d+ )(127\.0\.0\.1) (\d+)( typ host.*)$",
                        re.IGNORECASE | re.MULTILINE)


def packet_kind(data: bytes) -> str:
    """'stun', 'dtls', 'rtp', 'rtcp' or 'other' for one UDP payload."""
    if not data:
        return "other"
    first = data[0]
    if first < 4:
        return "stun"
    if 20 <= first <= 63:
        return "dtls"
    if 128 <= first <= 191 and len(data) >= 2:
        return "rtcp" if 192 <= data[1] <= 223 else "rtp"
    return "other"


@dataclass
class DirectionStats:
    forwarded: dict[str, int] = field(default_factory=dict)  # by kind, after drops
    rtp_seen: int = 0
    rtp_dropped: int = 0
    paused_dropped: int = 0  # any kind, while the relay was paused

    @property
    def drop_share(self) -> float:
        return self.rtp_dropped / self.rtp_seen if self.rtp_seen else 0.0


class _Face(asyncio.DatagramProtocol):
    """The relay socket that stands for one peer toward the other."""

    def __init__(self, relay: JitterRelay, side: str) -> None:
        self.relay = relay
        self.side = side
        self.transport: Optional[asyncio.DatagramTransport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # Arrived at the face of `side`, so it came from the other peer and goes to `side`.
        self.relay._forward(data, to_side=self.side)


class JitterRelay:
    """Between peers "a" (offerer) and "b" (answerer); rewrite both SDPs through it."""

    def __init__(
        self,
        *,
        max_delay_s: float = 0.030,
        drop_rate: float = 0.01,
        seed: int = 1,
        lifetime_s: float = 120.0,
    ) -> None:
        self.max_delay_s = max_delay_s
        self.drop_rate = drop_rate
        self.lifetime_s = lifetime_s
        self._rng = {"a": random.Random(seed * 2), "b": random.Random(seed * 2 + 1)}
        self.stats = {"a": DirectionStats(), "b": DirectionStats()}  # keyed by receiver
        self._faces: dict[str, _Face] = {}
        self._real: dict[str, tuple[str, int]] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._expiry: Optional[asyncio.TimerHandle] = None
        self._closed = False
        self._paused = False

    async def __aenter__(self) -> JitterRelay:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    @property
    def dropped(self) -> int:
        return self.stats["a"].rtp_dropped + self.stats["b"].rtp_dropped

    def unfillable_gap_pct(self, far_end_fills_losses: bool) -> float:
        """The share (%) of an echo the relay's drops took away before any buffer of the caller ("a") could act.

        A drop on the way back ("to a") is a hole the caller must conceal. A drop on the
        way out ("to b") is one only when the far end passes the hole on: the local echo
        server sends silence in a lost frame's place (server/realtime/audio_out.py), so
        the echo keeps every 20 ms slot, while bench.echo_peer sends one frame per frame
        received. Measured with loss on one leg only (5 %, 8 s calls, three seeds): the
        server's echo had 0.29-0.86 % concealed with outbound loss against 5.6-6.4 % with
        return loss (2.9 against 8.9 % before the server stood in for lost frames); the
        echo peer's 27.5 % against 29.2 %.
        """
        back = 100.0 * self.stats["a"].drop_share
        return back + (0.0 if far_end_fills_losses else 100.0 * self.stats["b"].drop_share)

    async def rewrite(self, sdp: str, side: str) -> str:
        """Point the single loopback host candidate of side's SDP at the relay."""
        if side not in ("a", "b") or side in self._faces:
            raise ValueError(f"side must be 'a' or 'b', once each (got {side!r})")
        ports = {int(m.group(3)) for m in _CANDIDATE.finditer(sdp)}
        if len(ports) != 1:
            raise ValueError(f"expected one 127.0.0.1 host candidate port, found {sorted(ports)}")
        real_port = ports.pop()
        loop = asyncio.get_running_loop()
        face = _Face(self, side)
        await loop.create_datagram_endpoint(lambda: face, local_addr=("127.0.0.1", 0))
        assert face.transport is not None
        self._faces[side] = face
        self._real[side] = ("127.0.0.1", real_port)
        if self._expiry is None:
            self._expiry = loop.call_later(self.lifetime_s, self.close)
        relay_port = face.transport.get_extra_info("sockname")[1]
        sdp = _CANDIDATE.sub(lambda m: f"{m.group(1)}127.0.0.1 {relay_port}{m.group(4)}", sdp)
        return re.sub(rf"^(m=\w+ ){real_port}\b", rf"\g<1>{relay_port}", sdp, flags=re.MULTILINE)

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Drop every packet of any kind, both ways, until resume(): the link went dead."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def _forward(self, data: bytes, to_side: str) -> None:
        from_side = "b" if to_side == "a" else "a"
        source = self._faces.get(from_side)  # the receiver must see the sender's face
        if self._closed or source is None or source.transport is None:
            return
        stats = self.stats[to_side]
        if self._paused:
            stats.paused_dropped += 1
            return
        kind = packet_kind(data)
        delay = 0.0
        if kind == "rtp":
            rng = self._rng[to_side]
            stats.rtp_seen += 1
            dropped = rng.random() < self.drop_rate
            delay = rng.uniform(0.0, self.max_delay_s)  # drawn always: same sequence per seed
            if dropped:
                stats.rtp_dropped += 1
                return
        stats.forwarded[kind] = stats.forwarded.get(kind, 0) + 1
        destination = self._real[to_side]
        if delay <= 0.0:
            source.transport.sendto(data, destination)
            return
        handle: asyncio.TimerHandle

        def send() -> None:
            self._timers.discard(handle)
            # A packet still in flight when the link went dead is lost with it.
            if not self._closed and not self._paused and source.transport is not None:
                source.transport.sendto(data, destination)

        handle = asyncio.get_running_loop().call_later(delay, send)
        self._timers.add(handle)

    def close(self) -> None:
        """Stop forwarding, cancel delayed packets, close both sockets. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        if self._expiry is not None:
            self._expiry.cancel()
        for face in self._faces.values():
            if face.transport is not None:
                face.transport.close()
        log.debug("relay closed: dropped %d RTP packets", self.dropped)

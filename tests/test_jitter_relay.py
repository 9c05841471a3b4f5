"""Two real aiortc peers through the seeded jitter/loss relay on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket

import pytest

from bench.audio_latency import echo_call
from bench.jitter_relay import JitterRelay, packet_kind


class Collector(asyncio.DatagramProtocol):
    def __init__(self, into: list[bytes]) -> None:
        self.into = into

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.into.append(data)


def test_packets_are_classified_by_their_first_bytes() -> None:
    assert packet_kind(bytes((0x00, 0x01)) + bytes(18)) == "stun"
    assert packet_kind(bytes((22, 0xFE, 0xFD))) == "dtls"
    assert packet_kind(bytes((0x80, 111))) == "rtp"
    assert packet_kind(bytes((0x80, 111 | 0x80))) == "rtp"  # marker bit set
    assert packet_kind(bytes((0x81, 200))) == "rtcp"  # sender report
    assert packet_kind(bytes((0x81, 205))) == "rtcp"  # transport feedback
    assert packet_kind(b"") == "other"
    assert packet_kind(bytes((70, 0))) == "other"


async def test_rewrite_needs_exactly_one_loopback_host_candidate() -> None:
    async with JitterRelay() as relay:
        with pytest.raises(ValueError, match="one 127.0.0.1"):
            await relay.rewrite("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "a")


@pytest.mark.timeout(10)
async def test_relay_drops_and_delays_only_rtp_and_closes_itself() -> None:
    loop = asyncio.get_running_loop()
    received: dict[str, list[bytes]] = {"a": [], "b": []}
    endpoints = {}
    for side in ("a", "b"):
        transport, _ = await loop.create_datagram_endpoint(
            lambda s=side: Collector(received[s]), local_addr=("127.0.0.1", 0))
        endpoints[side] = transport
    relay = JitterRelay(drop_rate=0.5, max_delay_s=0.01, seed=4, lifetime_s=1.0)
    faces = {}
    for side, transport in endpoints.items():
        port = transport.get_extra_info("sockname")[1]
        sdp = (f"m=audio {port} UDP/TLS/RTP/SAVPF 111\r\n"
               f"a=candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host\r\n")
        rewritten = await relay.rewrite(sdp, side)
        faces[side] = int(rewritten.split("127.0.0.1 ")[1].split()[0])
        assert f"m=audio {faces[side]} " in rewritten
    sender = endpoints["a"]
    for i in range(100):
        sender.sendto(bytes((0x80, 111, 0, i)), ("127.0.0.1", faces["b"]))
    for payload in (bytes((0, 1, 0, 0)), bytes((22, 0xFE)), bytes((0x81, 200, 0, 1))):
        sender.sendto(payload, ("127.0.0.1", faces["b"]))
    await asyncio.sleep(0.3)
    got = received["b"]
    stats = relay.stats["b"]
    assert stats.rtp_seen == 100
    assert 25 <= stats.rtp_dropped <= 75
    assert sum(1 for p in got if p[0] == 0x80) == 100 - stats.rtp_dropped
    assert {bytes((0, 1, 0, 0)), bytes((22, 0xFE)), bytes((0x81, 200, 0, 1))} <= set(got)
    assert stats.forwarded == {"rtp": 100 - stats.rtp_dropped, "stun": 1, "dtls": 1, "rtcp": 1}
    await asyncio.sleep(1.0)  # past the lifetime: the relay closed itself
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", faces["b"]))  # the port is free again
    relay.close()  # idempotent
    for transport in endpoints.values():
        transport.close()


@pytest.mark.timeout(60)
async def test_echo_through_the_relay_stays_shallow_with_few_gaps() -> None:
    async with JitterRelay(seed=7, drop_rate=0.03, lifetime_s=40.0) as relay:
        result = await echo_call(adaptive=True, seconds=5.0, relay=relay)
    buffer = result.client_buffer
    assert buffer is not None
    assert relay.dropped >= 3  # losses happened on the way
    assert buffer.skipped >= 1  # and the client skipped its holes instead of waiting
    assert buffer.frames_out >= 180  # ~250 packets in 5 s, some merged after holes
    assert buffer.max_depth <= buffer.target + 1 <= 7  # bounded wait behind holes
    assert buffer.depth <= buffer.target  # and no lasting backlog (aiortc #543)
    assert buffer.trimmed == 0  # every packet that came was played or merged
    assert len(result.rtts_ms) >= 2  # clicks made the round trip
    assert result.buffer_gap_pct < 5.0  # gaps beyond the relay's own drops stay rare

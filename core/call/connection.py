"""One connection attempt: ephemeral key → peer connection → SDP exchange → open channel.

The widget's nine steps for one attempt. What it owns (the peer connection, the
outgoing track, the data channel, the receive pump, the liveness watch) is torn
down as a whole by `close()`. `lost` resolves with the reason the connection ended;
the engine decides what to do about it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from base import loopback_ice
from base.errors import ProviderError
from base.inline_decoding import hook_inline_decoding
from base.jitter_buffer import hook_adaptive_jitter_buffer
from base.opus import prefer_opus_only
from core.audio import CaptureTrack, FrameWakeup
from core.call import liveness
from core.call.protocol import ClientEvent, encode
from core.playout import Playout, play_track
from core.providers import Provider

log = logging.getLogger(__name__)

Record = Callable[[str, float], None]  # a latency event: name, ms


@dataclass
class Connection:
    pc: RTCPeerConnection
    track: CaptureTrack
    loopback: bool
    channel: Any = None
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    watch: liveness.Liveness | None = None

    def lose(self, reason: str) -> None:
        if not self.lost.done():
            self.lost.set_result(reason)

    def send(self, event: ClientEvent) -> bool:
        """Send one client event; False when the channel is not open (nothing goes out before)."""
        if self.channel is None or self.channel.readyState != "open":
            return False
        self.channel.send(encode(event))
        return True

    async def close(self) -> None:
        self.lose("closed")
        if self.watch is not None:
            self.watch.stop()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.track.stop()
        try:
            await self.pc.close()
        except Exception:  # closing a broken connection must not break the teardown
            log.debug("error closing the peer connection", exc_info=True)
        if self.loopback:
            loopback_ice.release_loopback_only()


async def connect(
    provider: Provider,
    http: aiohttp.ClientSession,
    session_config: dict[str, Any],
    configuration: RTCConfiguration,
    *,
    read_input: Callable[[], np.ndarray | None],
    input_held_back: Callable[[], bool],
    wakeup: FrameWakeup | None,
    on_message: Callable[[Any], None],
    playout: Playout,
    accepts_audio: Callable[[], bool],
    record: Record,
) -> Connection:
    """Connect to `provider` and return once the event channel is open.

    Raises SandraError subclasses (provider refused, unreachable) or OSError/ValueError
    from the WebRTC stack; whatever was built is closed before raising.
    """
    started = time.monotonic()
    key = await provider.create_ephemeral_key(http, session_config)
    record("token_acquisition", (time.monotonic() - started) * 1000)
    if provider.is_loopback:
        loopback_ice.acquire_loopback_only()
    track = CaptureTrack(read_input, opus=True, wakeup=wakeup, held_back=input_held_back)
    conn = Connection(pc=RTCPeerConnection(configuration), track=track, loopback=provider.is_loopback)
    try:
        await _negotiate(conn, provider, http, key, on_message, playout, accepts_audio, record)
    except BaseException:
        await conn.close()
        raise
    return conn


async def _negotiate(conn: Connection, provider: Provider, http: aiohttp.ClientSession, key: Any,
                     on_message: Callable[[Any], None], playout: Playout, accepts_audio: Callable[[], bool],
                     record: Record) -> None:
    pc = conn.pc
    prefer_opus_only(pc.addTransceiver(conn.track, direction="sendrecv"))  # the track hands over Opus packets
    channel = conn.channel = pc.createDataChannel("oai-events")
    channel.on("open", conn.opened.set)
    channel.on("message", on_message)
    channel.on("close", lambda: conn.lose("the server closed the event channel"))
    hook_adaptive_jitter_buffer(pc)
    hook_inline_decoding(pc)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            conn.tasks.append(asyncio.get_running_loop().create_task(_receive(conn, track, playout, accepts_audio),
                                                                     name="receive"))

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            conn.lose(f"the connection {pc.connectionState}")

    await pc.setLocalDescription(await pc.createOffer())
    started = time.monotonic()
    # Post the gathered description (with candidates), not the bare offer.
    answer = await provider.exchange_sdp(http, key, pc.localDescription.sdp)
    record("sdp_exchange", (time.monotonic() - started) * 1000)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    opened = asyncio.ensure_future(conn.opened.wait())
    try:
        await asyncio.wait({opened, conn.lost}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        opened.cancel()  # also when the connect timeout cancels us here
    if not conn.opened.is_set():
        raise ProviderError(f"The connection to {provider.label} failed: {conn.lost.result()}.")
    conn.watch = liveness.start(pc, conn.lose)


async def _receive(conn: Connection, track: MediaStreamTrack, playout: Playout, accepts_audio: Callable[[], bool]) -> None:
    await play_track(track, playout, accept=accepts_audio)
    conn.lose("the server's audio ended")

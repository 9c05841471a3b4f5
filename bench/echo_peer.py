"""A minimal aiortc echo peer: answers an offer and sends back every audio frame it gets.

It stands in for ``python main.py serve --mode echo`` in bench/audio_latency.py until the
local server exists: both take an offer SDP and return an answer SDP (``answer``), and
both echo the caller's audio straight back, so a benchmark written against this
``answer``/``close`` pair can switch to an HTTP POST to the server's
``/v1/realtime/calls`` without other changes.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
from typing import Optional

import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from base.loopback_ice import acquire_loopback_only, release_loopback_only
from base.jitter_buffer import hook_adaptive_jitter_buffer

log = logging.getLogger(__name__)

_FRAME = 960  # the Opus encoder wants 20 ms frames; merged frames are split again
_TIME_BASE = fractions.Fraction(1, 48000)


class EchoTrack(MediaStreamTrack):
    """Outgoing track whose frames are the received ones, re-cut to 20 ms."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[Optional[av.AudioFrame]] = asyncio.Queue()
        self._pts = 0

    def feed(self, frame: av.AudioFrame) -> None:
        if frame.samples == _FRAME:
            self._queue.put_nowait(self._stamp(frame))
            return
        samples = frame.to_ndarray()  # packed s16: shape (1, samples * channels)
        width = _FRAME * len(frame.layout.channels)
        for start in range(0, samples.shape[1], width):
            piece = av.AudioFrame.from_ndarray(
                samples[:, start : start + width], format=frame.format.name,
                layout=frame.layout.name)
            piece.sample_rate = frame.sample_rate
            self._queue.put_nowait(self._stamp(piece))

    def _stamp(self, frame: av.AudioFrame) -> av.AudioFrame:
        # Continuous timestamps: the encoder must not see the holes of skipped packets.
        frame.pts = self._pts
        frame.time_base = _TIME_BASE
        self._pts += frame.samples
        return frame

    def end(self) -> None:
        self._queue.put_nowait(None)

    async def recv(self) -> av.AudioFrame:
        frame = await self._queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame


class EchoPeer:
    """The far end of one call; adaptive=False keeps aiortc's stock jitter buffer."""

    fills_losses = False  # one frame back per frame received: a lost one is a hole in the echo

    def __init__(self, *, adaptive: bool = True) -> None:
        self.adaptive = adaptive
        self._pc: Optional[RTCPeerConnection] = None
        self._echo = EchoTrack()
        self._pump: Optional[asyncio.Task[None]] = None

    async def answer(self, offer_sdp: str) -> str:
        acquire_loopback_only()
        self._pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        if self.adaptive:
            hook_adaptive_jitter_buffer(pc)

        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                pc.addTrack(self._echo)
                self._pump = asyncio.ensure_future(self._echo_from(track))

        pc.on("track", on_track)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp

    async def _echo_from(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                self._echo.feed(await track.recv())
            except MediaStreamError:
                self._echo.end()
                return

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        if self._pc is not None:
            await self._pc.close()
            self._pc = None
            release_loopback_only()


"""A hostile provider for the client engine: FakeOpenAI's HTTP endpoints with a real
aiortc peer behind `POST …/realtime/calls`, so a test can put anything on `oai-events`.

FakeOpenAI (rig/fake_openai.py) already checks keys, records requests and answers
canned errors (token 401/429/500, garbage SDP, delays); this adds only the WebRTC side:
each accepted offer gets a real answer, silence on the audio track (so the engine's
watchdog sees a live peer) and a data channel the test can flood or close.

    async with HostileServer(api_key="sk-…") as hostile:
        engine = CallEngine(custom_settings(hostile.base_url), api_key=hostile.api_key, …)
        peer = await hostile.next_peer(10)
        peer.send_raw("{not json")
        await drain(peer.channel)
        peer.channel.close()

Also: hostile_messages(rng) — the garbage itself, shared by the engine and server fuzz.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator

from aiohttp import web
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from base import loopback_ice
from rig.fake_openai import ANSWER_SDP, FakeOpenAI
from server.realtime.audio_out import OutputTrack, Pacing

# aiortc refuses to send a data-channel message above the peer's limit (64 KiB by default).
MAX_MESSAGE = 65_536


async def drain(channel: RTCDataChannel, below: int = 1 << 20, timeout: float = 30) -> None:
    """Wait until the channel's send buffer is under `below` bytes: flow control for a flood,
    which aiortc would otherwise queue in memory without limit."""
    deadline = asyncio.get_running_loop().time() + timeout
    while channel.bufferedAmount > below:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the other side stopped reading: {channel.bufferedAmount} bytes stuck")
        await asyncio.sleep(0.005)


class HostilePeer:
    """The server side of one call: a real peer connection the test controls."""

    def __init__(self, send_audio: bool = True) -> None:
        self.send_audio = send_audio  # False: a server that sends no audio until it speaks
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.audio = OutputTrack(Pacing.CLOCK)  # silence, 20 ms at a time, like a quiet server
        self.channel: RTCDataChannel | None = None
        self.opened = asyncio.Event()
        self.received: list[str | bytes] = []  # what the engine sent
        self._loopback = False

    async def answer(self, offer_sdp: str) -> str:
        loopback_ice.acquire_loopback_only()
        self._loopback = True

        @self.pc.on("datachannel")
        def on_channel(channel: RTCDataChannel) -> None:
            self.channel = channel
            channel.on("message", self.received.append)
            self.opened.set()

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        if self.send_audio:
            self.pc.addTrack(self.audio)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    def send_raw(self, message: str | bytes) -> None:
        assert self.channel is not None, "the engine has not opened its data channel yet"
        self.channel.send(message)

    def send(self, event: dict) -> None:
        self.send_raw(json.dumps(event))

    async def close(self) -> None:
        self.audio.stop()
        await self.pc.close()
        if self._loopback:
            self._loopback = False
            loopback_ice.release_loopback_only()


class HostileServer(FakeOpenAI):
    def __init__(self, api_key: str = "sk-test-hostile-0123456789", ttl: int = 600, send_audio: bool = True) -> None:
        super().__init__(api_key=api_key, ttl=ttl)
        self.send_audio = send_audio
        self.peers: list[HostilePeer] = []
        self._new_peer = asyncio.Condition()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        response = await super()._handle(request)
        # FakeOpenAI's placeholder answer means "accepted": swap in a real one. Canned
        # (queued) answers, garbage or errors, go out as they are.
        if self._endpoint(request) != "calls" or getattr(response, "text", None) != ANSWER_SDP:
            return response
        peer = HostilePeer(self.send_audio)
        self.peers.append(peer)
        answer = await peer.answer((await request.read()).decode())
        async with self._new_peer:
            self._new_peer.notify_all()
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": response.headers["Location"]})

    async def next_peer(self, timeout: float, after: int = 0) -> HostilePeer:
        """The first peer beyond the first `after` ones, once its data channel is open."""
        async with self._new_peer:
            await asyncio.wait_for(self._new_peer.wait_for(lambda: len(self.peers) > after), timeout)
        peer = self.peers[after]
        await asyncio.wait_for(peer.opened.wait(), timeout)
        return peer

    async def __aexit__(self, *exc: object) -> None:
        for peer in self.peers:
            await peer.close()
        await super().__aexit__(*exc)


# --- the garbage ------------------------------------------------------------------------

# Real event types with the wrong shapes are nastier than random names: they reach the handlers.
_KNOWN_TYPES = (
    "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.delta",
    "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
    "response.audio_transcript.delta", "response.audio_transcript.done",
    "output_audio_buffer.started", "output_audio_buffer.stopped", "output_audio_buffer.cleared",
    "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
    "session.update", "input_audio_buffer.commit", "input_audio_buffer.clear", "response.create",
    "response.cancel", "output_audio_buffer.clear", "conversation.item.create", "error", "response.done",
)
_WRONG_VALUES = (None, True, 0, -1, 1e308, float("nan"), "", "x" * 300, [], [1, [2]], {}, {"a": {"b": None}},
                 "\ud800", "\x00\x1b[2J", 2**70)
_FIELDS = ("transcript", "delta", "response_id", "item_id", "error", "session", "item", "response", "event_id",
           "content_index")


def _deep(rng: random.Random) -> str:
    depth = rng.choice((50, 900, 5_000, 30_000))  # under and far over Python's recursion limit
    opener, closer = rng.choice((("[", "]"), ('{"a":', "}")))
    return opener * depth + "1" + closer * depth


def hostile_messages(rng: random.Random) -> Iterator[str | bytes]:
    """An endless stream of hostile data-channel messages, every one under MAX_MESSAGE bytes.

    Weighted towards small messages: the big ones cost the most time on the wire and
    a few hundred of them already probe every size check.
    """
    kinds = ("broken", "huge", "deep", "wrong_types", "unknown", "binary", "not_object", "noise")
    weights = (4, 0.3, 0.3, 6, 4, 2, 2, 2)
    while True:
        kind = rng.choices(kinds, weights)[0]
        if kind == "broken":  # not JSON at all, or JSON cut short
            yield rng.choice(("{", "}", "nul", "[1,", '{"type": "error"', "\x00", "{'type': 1}", "NaN", "💥" * 10))
        elif kind == "huge":  # huge strings, inside and outside a known event
            size = rng.choice((1_000, 30_000, MAX_MESSAGE - 200))
            yield rng.choice((
                json.dumps({"type": rng.choice(_KNOWN_TYPES), "delta": "a" * size, "transcript": "b" * size,
                            "response_id": "r"})[:MAX_MESSAGE - 1],
                "z" * size,
                json.dumps({"type": "t" * size}),
            ))
        elif kind == "deep":
            yield _deep(rng)
        elif kind == "wrong_types":  # a real event type, fields of the wrong type
            event = {"type": rng.choice(_KNOWN_TYPES)}
            for name in rng.sample(_FIELDS, rng.randrange(1, 5)):
                event[name] = rng.choice(_WRONG_VALUES)
            yield json.dumps(event)
        elif kind == "unknown":  # unknown events, and types that are not strings
            yield json.dumps({"type": rng.choice((f"x.{rng.randrange(10**6)}", 7, None, ["a"], {"t": 1}))})
        elif kind == "binary":
            yield rng.randbytes(rng.choice((1, 64, 4_000)))
        elif kind == "not_object":  # valid JSON that is not an object
            yield json.dumps(rng.choice(([1, 2], "type", 3.5, None, True)))
        else:  # random bytes read loosely as text
            yield rng.randbytes(rng.randrange(1, 200)).decode("latin-1")

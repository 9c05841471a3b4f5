"""A real aiortc client of the Realtime API over WebRTC: the self-test's caller, and
the one tests and benchmarks use.

It does what the desktop app does on the wire: ephemeral key from client_secrets,
`oai-events` data channel and an audio track before the offer, SDP POST, events in
and out, 20 ms audio frames sent in real time (silence between turns), and the
answer's audio recorded with arrival times. Loopback only.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from base import loopback_ice
from base.pcm import RATE, level_dbfs
from server.realtime.audio_out import OutputTrack, Pacing, Playback
from server.realtime.call import mono_samples

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=20)
PUSH_TO_TALK = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}


async def ephemeral_key(base_url: str, server_key: str, session: dict[str, Any] | None = None,
                        ttl_s: int | None = None) -> str:
    body: dict[str, Any] = {"session": session or PUSH_TO_TALK}
    if ttl_s is not None:
        body["expires_after"] = {"anchor": "created_at", "seconds": ttl_s}
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        async with http.post(f"{base_url}/realtime/client_secrets", json=body,
                             headers={"Authorization": f"Bearer {server_key}"}) as response:
            data = await response.json()
            assert response.status == 200, data
            return data["value"]


@dataclass
class ReceivedAudio:
    samples: list[np.ndarray] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # monotonic time each frame arrived

    def since(self, t: float) -> np.ndarray:
        chunks = [s for s, at in zip(self.samples, self.arrivals) if at >= t]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def first_loud_after(self, t: float, dbfs: float = -40.0) -> float | None:
        for samples, at in zip(self.samples, self.arrivals):
            if at >= t and level_dbfs(samples) >= dbfs:
                return at
        return None


class RealtimeClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = OutputTrack(Pacing.CLOCK)  # the same real-time 20 ms sender the server uses
        self.channel = self.pc.createDataChannel("oai-events")
        self.events: list[dict[str, Any]] = []
        # Every data-channel message exactly as it crossed the wire, for shape checks.
        self.sent_raw: list[str | bytes] = []
        self.received_raw: list[str | bytes] = []
        self.audio = ReceivedAudio()
        self.location: str | None = None
        self._changed = asyncio.Condition()
        self._opened = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loopback = False
        self.channel.on("open", self._opened.set)
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)

    @classmethod
    async def connect(cls, base_url: str, key: str, *, path: str = "/realtime/calls",
                      timeout: float = 15, mic: OutputTrack | None = None) -> RealtimeClient:
        """A connected call (data channel open) using the ephemeral key `key`; `mic`
        stands in for the default real-time microphone track."""
        client = cls(base_url)
        if mic is not None:
            client.mic = mic
        loopback_ice.acquire_loopback_only()
        client._loopback = True
        try:
            client.pc.addTrack(client.mic)
            await client.pc.setLocalDescription(await client.pc.createOffer())
            async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
                async with http.post(f"{base_url}{path}", data=client.pc.localDescription.sdp,
                                     headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": "application/sdp"}) as response:
                    text = await response.text()
                    assert response.status == 201, f"{response.status}: {text}"
                    client.location = response.headers.get("Location")
            await client.pc.setRemoteDescription(RTCSessionDescription(sdp=text, type="answer"))
            await asyncio.wait_for(client._opened.wait(), timeout)
        except BaseException:
            await client.close()
            raise
        return client

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(self._record(track)))

    async def _record(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.audio.samples.append(mono_samples(frame))
            self.audio.arrivals.append(time.monotonic())

    def _on_message(self, message: str | bytes) -> None:
        self.received_raw.append(message)
        event = json.loads(message)
        event["_received_at"] = time.monotonic()
        self.events.append(event)
        self._tasks.append(asyncio.get_running_loop().create_task(self._notify()))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def mark(self) -> int:
        """A cursor: wait_for(…, since=mark) only sees events that came after it."""
        return len(self.events)

    def send(self, event: dict[str, Any]) -> None:
        self.send_raw(json.dumps(event))

    def send_raw(self, message: str | bytes) -> None:
        self.sent_raw.append(message)
        self.channel.send(message)

    def speak(self, pcm: np.ndarray) -> Playback:
        """Send this audio in real time on the microphone track."""
        return self.mic.play(pcm)

    async def wait_for(self, event_type: str, *, since: int = 0, timeout: float = 15) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((e for e in self.events[since:] if e.get("type") == event_type), None)

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(find), timeout)
            except asyncio.TimeoutError:
                seen = [e.get("type") for e in self.events[since:]]
                raise AssertionError(f"no {event_type} within {timeout} s; got {seen}") from None
        found = find()
        assert found is not None
        return found

    def of_type(self, event_type: str, since: int = 0) -> list[dict[str, Any]]:
        return [e for e in self.events[since:] if e.get("type") == event_type]

    async def push_to_talk(self, pcm: np.ndarray, *, timeout: float = 20) -> int:
        """clear, speak pcm, commit, response.create; returns the mark of the turn's start."""
        start = self.mark()
        self.send({"type": "input_audio_buffer.clear"})
        await asyncio.wait_for(self.speak(pcm).finished, timeout)
        # The last frames are still in flight: let them reach the server before the commit.
        await asyncio.sleep(0.1)
        self.send({"type": "input_audio_buffer.commit"})
        self.send({"type": "response.create"})
        return start

    def type_text(self, text: str) -> int:
        """A typed turn: a user input_text message, then response.create; returns the turn's mark."""
        start = self.mark()
        self.send({"type": "conversation.item.create",
                   "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
        self.send({"type": "response.create"})
        return start

    def send_function_output(self, call_id: str, output: str) -> int:
        """A function_call_output for call_id, then response.create; returns the mark before them."""
        start = self.mark()
        self.send({"type": "conversation.item.create",
                   "item": {"type": "function_call_output", "call_id": call_id, "output": output}})
        self.send({"type": "response.create"})
        return start

    async def declare_tools(self, *names: str) -> dict[str, Any]:
        """session.update declaring these function tools (an empty object schema each); the session.updated."""
        start = self.mark()
        tools = [{"type": "function", "name": name, "description": f"the {name} tool",
                  "parameters": {"type": "object", "properties": {}}} for name in names]
        self.send({"type": "session.update", "session": {"type": "realtime", "tools": tools, "tool_choice": "auto"}})
        return await self.wait_for("session.updated", since=start)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.mic.stop()
        await self.pc.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._loopback:
            self._loopback = False
            loopback_ice.release_loopback_only()


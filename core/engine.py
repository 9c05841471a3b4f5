"""The call engine: one realtime voice call, kept alive across dropped connections.

The widget's nine steps (token → microphone → peer connection → track → offer → ICE →
SDP exchange → answer → data-channel events) run once per connection attempt; the
call's life (core/call_state.py) says where we are, ReconnectPolicy says how long to
wait, BoundedHistory keeps the conversation so a new session can be re-seeded, and
LatencyTracker measures. The window and `talk` drive this same object and hear it
through observers; nothing here knows about Qt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from base import loopback_ice, paths
from core import ice_servers
from core.audio import AudioIO, CaptureTrack, DeviceAudio
from core.backoff import ReconnectPolicy
from core.call_state import CallLife, CallState, Phase
from core.config import Settings, get_api_key, get_turn_password
from base.errors import AuthError, ConfigError, ProviderError, SandraError
from core.events import (
    AssistantSpeaking,
    EngineEvent,
    InputLevel,
    LatencyMeasured,
    Problem,
    ServerEvent,
    StateChanged,
    TranscriptDelta,
)
from core.history import BoundedHistory
from base.jitter_buffer import install_adaptive_jitter_buffer
from core.metrics_sender import MetricsSender
from base.pcm import MonoConverter
from core.playout import Playout, PlayoutStats
from core.providers import Provider, make_provider
from core.server_events import BadEvent, BadEventLog, parse_event
from core.sound_devices import SoundDevices
from core.telemetry import LatencyTracker
from core.transcripts import TranscriptLog, prune

log = logging.getLogger(__name__)

Observer = Callable[[EngineEvent], None]
MAX_RETRY_AFTER = 60.0  # seconds; a larger Retry-After would look like a hang
# A server that has streamed audio without a pause (the local server sends a frame every
# 20 ms, silence included) and then goes quiet this long is gone: waiting the full
# watchdog timeout only delays the reconnect.
STEADY_AUDIO_GAP_S = 0.2  # the longest pause that still counts as a steady stream
STEADY_AUDIO_TIMEOUT_S = 1.0
# ...but only a server whose audio starts with the connection streams while idle; one
# whose first frame comes later speaks only when answering and may go quiet any time.
STEADY_AUDIO_START_S = 2.0


@dataclass
class EngineOptions:
    connect_timeout: float = 10.0  # no open data channel by then: the attempt failed
    # Nothing at all from the peer (audio, events, RTCP reports) for this long: it is gone.
    # A peer that sends audio only while speaking still sends RTCP receiver reports about
    # our audio, but libwebrtc spaces them up to ~7.5 s apart: hence 10 s, not less.
    watchdog_timeout: float = 10.0
    stun_probe_timeout: float = 1.0
    save_transcript: bool = True  # off for the self-test, which is no conversation of the user's


@dataclass
class _Connection:
    """What one connection attempt owns; torn down as a whole."""

    pc: RTCPeerConnection
    track: CaptureTrack
    channel: Any = None
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    created: float = field(default_factory=time.monotonic)
    last_rx: float = field(default_factory=time.monotonic)
    last_audio: float | None = None
    steady_audio: bool = True  # no pause over STEADY_AUDIO_GAP_S since the first frame
    tasks: list[asyncio.Task] = field(default_factory=list)
    loopback: bool = False

    def lose(self, reason: str) -> None:
        if not self.lost.done():
            self.lost.set_result(reason)


class CallEngine:
    def __init__(
        self,
        settings: Settings,
        *,
        audio: AudioIO | None = None,
        api_key: str | None = None,
        options: EngineOptions | None = None,
        policy: ReconnectPolicy | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        provider_wrapper: Callable[[Provider], Provider] | None = None,
    ) -> None:
        self.settings = settings
        self.options = options or EngineOptions()
        self.life = CallLife()
        self.life.add_observer(lambda _old, new: self._emit(StateChanged(new)))
        self.history = BoundedHistory()
        self.session_id = uuid.uuid4().hex
        self.telemetry = LatencyTracker(self.session_id, on_batch=self._on_metrics_batch)
        self.transcript: TranscriptLog | None = None  # opened at start(), in the user data dir
        self.reconnects = 0
        self._policy = policy or ReconnectPolicy()
        self._sleep = sleep
        # Benchmarks put a jitter relay between the peers by rewriting the SDP through this.
        self._provider_wrapper = provider_wrapper
        self._api_key = api_key
        self._observers: list[Observer] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._playout = Playout(on_first_audible=self._on_first_audible)
        self._devices = SoundDevices(
            audio or DeviceAudio(settings.input_device, settings.output_device), self._playout.read,
            on_level=lambda dbfs: self._emit(InputLevel(dbfs)), on_problem=self._problem,
        )
        self._conn: _Connection | None = None
        self._run_task: asyncio.Task | None = None
        self._http: aiohttp.ClientSession | None = None
        self._local = None  # core.local_server.LocalServer, started on first use
        self._metrics: MetricsSender | None = None
        self._refused_metrics_url: str | None = None
        self._stun_url: str | None | bool = False  # False: not probed yet
        self._failed_attempts = 0  # attempts in a row that never connected: picks the TURN transport
        self._retry_after: float | None = None  # a 429's Retry-After, for the next delay
        self._ptt = False
        self._hands_free = settings.hands_free
        self._speaking = False
        # After a barge-in, audio of the cut answer still in flight must not play.
        self._muted_until: float = 0.0
        self._answer_wanted_at: float | None = None
        self.bad_events = BadEventLog(log)  # what the server sent that was ignored

    # --- observers -------------------------------------------------------------------

    @property
    def state(self) -> CallState:
        return self.life.state

    @property
    def provider_label(self) -> str:
        return {"local": "Local (offline)", "openai": "OpenAI", "azure": "Azure OpenAI"}.get(
            self.settings.provider, self.settings.base_url or self.settings.token_url or self.settings.provider
        )

    @property
    def model(self) -> str:
        return "sandra-local" if self.settings.provider == "local" else self.settings.model

    def playout_stats(self) -> PlayoutStats:
        """The playout stage's counters: benchmarks measure concealed gaps with them."""
        return self._playout.stats()

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        self._observers.append(observer)
        return lambda: self._observers.remove(observer) if observer in self._observers else None

    def _emit(self, event: EngineEvent) -> None:
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:  # an observer's bug must not break the call
                log.exception("engine observer failed on %s", type(event).__name__)

    def _problem(self, message: str, fatal: bool = False) -> None:
        log.warning("%s", message)
        self._emit(Problem(message, fatal))

    # --- the user's controls ---------------------------------------------------------

    async def start(self) -> None:
        """Begin the call (or redial after it ended). Failures arrive as events, never raised."""
        if self._run_task is not None and not self._run_task.done():
            return
        self._policy.reset()
        self._loop = asyncio.get_running_loop()
        self._open_transcript()
        try:
            await self._devices.open()
        except SandraError as exc:
            self.life.connecting()
            self.life.ended(str(exc))
            self._problem(str(exc), fatal=True)
            return
        self.life.connecting()
        self._run_task = asyncio.get_running_loop().create_task(self._run(), name="call")

    async def hang_up(self) -> None:
        task, self._run_task = self._run_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self._teardown()
        if self.state.phase is not Phase.ENDED and self.state.phase is not Phase.IDLE:
            self.life.ended("You hung up.")

    async def close(self) -> None:
        """Hang up and release everything: devices, the local server, HTTP, metrics."""
        await self.hang_up()
        await self._devices.close()
        if self._metrics is not None:
            await self._metrics.close()
            self._metrics = None
        if self._local is not None:
            await self._local.stop()
            self._local = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self.transcript is not None:
            self.transcript.close()

    def press(self) -> None:
        """Push-to-talk down. While the answer plays, this interrupts it (barge-in)."""
        if self._speaking or self._answer_wanted_at is not None:
            self._barge_in()
        self._ptt = True
        self._devices.discard()
        self._send({"type": "input_audio_buffer.clear"})

    def release(self) -> None:
        """Push-to-talk up: the turn is complete, ask for the answer."""
        if not self._ptt:
            return
        self._ptt = False
        if self._hands_free:
            return
        self._answer_wanted_at = time.monotonic()
        self._playout.expect_audio()
        self._send({"type": "input_audio_buffer.commit"})
        self._send({"type": "response.create"})

    async def set_hands_free(self, on: bool) -> None:
        self._hands_free = on
        self.settings.hands_free = on
        self._send({"type": "session.update", "session": self._session_update()})

    async def set_devices(self, input_device: str | None, output_device: str | None) -> None:
        """Switch sound devices during a call, without reconnecting."""
        self.settings.input_device, self.settings.output_device = input_device, output_device
        if isinstance(self._devices.audio, DeviceAudio):
            try:
                await self._devices.switch(DeviceAudio(input_device, output_device))
            except SandraError as exc:
                self._problem(str(exc))

    def _barge_in(self) -> None:
        self._answer_wanted_at = None
        self._muted_until = time.monotonic() + 1.0  # until the server confirms, at most 1 s
        self._playout.clear()
        self._send({"type": "response.cancel"})
        self._send({"type": "output_audio_buffer.clear"})
        self._set_speaking(False)

    def _read_input(self) -> np.ndarray | None:
        """What the outgoing track sends now: the microphone while the gate is open."""
        return self._devices.read_frame() if self._ptt or self._hands_free else None

    # --- the conversation --------------------------------------------------------------

    def _open_transcript(self) -> None:
        if self.transcript is not None or not self.options.save_transcript:
            return
        try:
            directory = paths.transcripts_dir()
            prune(directory, self.settings.transcript_retention_days)
        except OSError as exc:
            self._problem(f"Transcripts cannot be saved ({exc}); the call goes on without them.")
            return
        self.transcript = TranscriptLog(directory, self.session_id)

    def _remember(self, role: str, text: str) -> None:
        """Into the bounded history (re-seeding, export) and the transcript on disk."""
        self.history.add(role, text)
        if self.transcript is not None:
            self.transcript.append(role, text)

    # --- audio -----------------------------------------------------------------------

    def _on_first_audible(self, play_time: float) -> None:
        """The playout stage's reader (often PortAudio's thread) sounded the first audible sample."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._answer_audible, play_time)

    def _answer_audible(self, play_time: float) -> None:
        if self._answer_wanted_at is not None:
            self._record("response_latency", max(0.0, play_time - self._answer_wanted_at) * 1000)
            self._answer_wanted_at = None

    def _set_speaking(self, speaking: bool) -> None:
        if speaking != self._speaking:
            self._speaking = speaking
            self._emit(AssistantSpeaking(speaking))

    # --- telemetry -------------------------------------------------------------------

    def _record(self, name: str, ms: float) -> None:
        self.telemetry.record(name, ms)
        self._emit(LatencyMeasured(name, ms))

    def _on_metrics_batch(self, payload: dict) -> None:
        url = self.settings.metrics_url
        if not url or url == self._refused_metrics_url:
            return
        if self._metrics is None:
            try:
                self._metrics = MetricsSender(url)
            except ValueError as exc:
                self._refused_metrics_url = url  # say it once, not every 10 measurements
                self._problem(f"Latency figures are not sent: the metrics URL is not usable ({exc}).")
                return
        self._metrics.submit(payload)

    # --- the call's life -------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                reason = await self._one_connection()
                await self._teardown()
                if reason is None:
                    return
                delay = self._policy.next_delay()
                if delay is not None and self._retry_after:
                    # The provider said when to come back; sooner would only be refused again.
                    delay = max(delay, min(self._retry_after, MAX_RETRY_AFTER))
                    self._retry_after = None
                if delay is None:
                    message = (
                        f"The connection was lost and {self._policy.max_attempts} attempts to reconnect failed "
                        f"({reason}). Check the network and the provider in Settings, then press Reconnect."
                    )
                    self.life.ended(message)
                    self._problem(message, fatal=True)
                    return
                self.reconnects += 1
                self.life.reconnecting(self._policy.attempt, self._policy.max_attempts, delay)
                await self._sleep(delay)
                self.life.connecting(self._policy.attempt, self._policy.max_attempts)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the engine's boundary: a bug ends the call, readably
            log.exception("call failed unexpectedly")
            await self._teardown()
            message = f"The call stopped because of an internal error ({type(exc).__name__}). Press Reconnect to try again."
            if self.state.phase is not Phase.ENDED:
                self.life.ended(message)
            self._problem(message, fatal=True)

    async def _one_connection(self) -> str | None:
        """Connect and stay connected; returns why the connection ended (None: the call is over)."""
        attempt_started = time.monotonic()
        try:
            await asyncio.wait_for(self._connect(), self.options.connect_timeout)
        except (AuthError, ConfigError) as exc:  # retrying cannot fix a wrong key or setting
            self.life.ended(str(exc))
            self._problem(str(exc), fatal=True)
            return None
        except asyncio.TimeoutError:
            self._failed_attempts += 1
            return f"no connection within {self.options.connect_timeout:.0f} s"
        except SandraError as exc:
            self._failed_attempts += 1
            self._retry_after = getattr(exc, "retry_after", None)
            self._problem(str(exc))
            return str(exc)
        except (OSError, aiohttp.ClientError, ValueError) as exc:
            self._failed_attempts += 1
            return f"{type(exc).__name__}: {exc}"
        assert self._conn is not None
        self._policy.reset()
        self._failed_attempts = 0
        self.life.connected()
        self._record("connect", (time.monotonic() - attempt_started) * 1000)
        return await self._conn.lost

    async def _provider(self) -> Provider:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        if self.settings.provider == "local":
            if self._local is None:
                from core.local_server import LocalServer

                self._local = LocalServer()
            await self._local.ensure_running()
            return make_provider(self.settings.provider_settings(), None, self._local.base_url, self._local.server_key)
        api_key = self._api_key if self._api_key is not None else get_api_key(self.settings.provider)
        return make_provider(self.settings.provider_settings(), api_key)

    async def _rtc_configuration(self, provider: Provider):
        turn = None
        if not provider.is_loopback:
            turn = ice_servers.resolve_turn(
                os.environ, self.settings.turn_server, self.settings.turn_username, get_turn_password()
            )
        plan = ice_servers.IcePlan(turn=turn, loopback=provider.is_loopback)
        if plan.needs_probe and self._stun_url is False:  # once a call: the answer rarely changes
            self._stun_url = await ice_servers.probe_stun(plan.stun_urls, self.options.stun_probe_timeout)
        stun_url = self._stun_url or None
        log.info("ICE: %s", plan.describe(self._failed_attempts, stun_url))
        return plan.configuration(self._failed_attempts, stun_url)

    async def _connect(self) -> None:
        provider = await self._provider()
        if self._provider_wrapper is not None:
            provider = self._provider_wrapper(provider)
        started = time.monotonic()
        key = await provider.create_ephemeral_key(self._http, self._session_config())
        self._record("token_acquisition", (time.monotonic() - started) * 1000)

        configuration = await self._rtc_configuration(provider)
        if provider.is_loopback:
            loopback_ice.acquire_loopback_only()
        pc = RTCPeerConnection(configuration)
        conn = self._conn = _Connection(pc=pc, track=CaptureTrack(self._read_input), loopback=provider.is_loopback)
        pc.addTrack(conn.track)
        channel = conn.channel = pc.createDataChannel("oai-events")
        channel.on("open", conn.opened.set)
        channel.on("message", lambda message: self._on_message(conn, message))
        channel.on("close", lambda: conn.lose("the server closed the event channel"))

        @pc.on("track")
        def on_track(track) -> None:
            if track.kind != "audio":
                return
            receiver = next(t.receiver for t in pc.getTransceivers() if t.receiver.track is track)
            install_adaptive_jitter_buffer(receiver)
            conn.tasks.append(asyncio.get_running_loop().create_task(self._pump(conn, track), name="pump"))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                conn.lose(f"the connection {pc.connectionState}")

        await pc.setLocalDescription(await pc.createOffer())
        started = time.monotonic()
        # Post the gathered description (with candidates), not the bare offer.
        answer = await provider.exchange_sdp(self._http, key, pc.localDescription.sdp)
        self._record("sdp_exchange", (time.monotonic() - started) * 1000)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        opened = asyncio.ensure_future(conn.opened.wait())
        try:
            await asyncio.wait({opened, conn.lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()  # also when the connect timeout cancels us here
        if not conn.opened.is_set():
            raise ProviderError(f"The connection to {provider.label} failed: {conn.lost.result()}.")
        conn.last_rx = time.monotonic()
        conn.tasks.append(asyncio.get_running_loop().create_task(self._watchdog(conn), name="watchdog"))
        self._send({"type": "session.update", "session": self._session_update()})
        self._reseed()

    async def _pump(self, conn: _Connection, track) -> None:
        """Drain the remote track as fast as frames come, into the playout stage."""
        converter = MonoConverter()
        try:
            while True:
                frame = await track.recv()
                conn.last_rx = time.monotonic()
                if conn.last_audio is None:
                    conn.steady_audio = conn.last_rx - conn.created <= STEADY_AUDIO_START_S
                elif conn.last_rx - conn.last_audio > STEADY_AUDIO_GAP_S:
                    conn.steady_audio = False
                conn.last_audio = conn.last_rx
                if conn.last_rx >= self._muted_until:
                    self._playout.write(converter.convert(frame))
        except MediaStreamError:
            conn.lose("the server's audio ended")

    async def _watchdog(self, conn: _Connection) -> None:
        """aiortc notices a silent peer only after ~30 s; audio, events or RTCP stopping tells sooner."""
        timeout = self.options.watchdog_timeout
        interval = min(0.1, timeout / 4)
        packets, stats_at = 0, 0.0
        while not conn.lost.done():
            asleep_at = time.monotonic()
            await asyncio.sleep(interval)
            now = time.monotonic()
            if now - asleep_at > interval + 0.25:
                continue  # our own loop stalled: let the pump take what arrived before judging
            if conn.steady_audio and conn.last_audio is not None and now - conn.last_audio > STEADY_AUDIO_TIMEOUT_S:
                conn.lose(f"the server's steady audio stopped {now - conn.last_audio:.1f} s ago")
            if now - stats_at >= 1.0:  # any datagram counts (RTCP, SCTP): cheap enough once a second
                stats_at = now
                received = sum(getattr(s, "packetsReceived", 0) for s in (await conn.pc.getStats()).values()
                               if s.type == "transport")
                if received > packets:
                    packets, conn.last_rx = received, max(conn.last_rx, now)
            silent = now - conn.last_rx
            if silent > timeout:
                conn.lose(f"nothing from the server for {silent:.1f} s")

    async def _teardown(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.lose("closed")
        for task in conn.tasks:
            task.cancel()
        for task in conn.tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        conn.track.stop()
        try:
            await conn.pc.close()
        except Exception:  # closing a broken connection must not break the teardown
            log.debug("error closing the peer connection", exc_info=True)
        if conn.loopback:
            loopback_ice.release_loopback_only()
        self._set_speaking(False)
        self._answer_wanted_at = None

    # --- events ----------------------------------------------------------------------

    def _session_config(self) -> dict:
        """The session asked for with the ephemeral key (PROTOCOL.md §1)."""
        s = self.settings
        return {
            "type": "realtime",
            "model": s.model,
            "instructions": s.instructions,
            "audio": {
                "input": {
                    "turn_detection": {"type": "server_vad"} if self._hands_free else None,
                    "transcription": {"model": s.transcription_model},
                },
                "output": {"voice": s.voice},
            },
        }

    def _session_update(self) -> dict:
        config = self._session_config()
        config.pop("model")
        return config

    def _reseed(self) -> None:
        """A new session knows nothing: tell it the conversation so far."""
        for message in self.history.messages():
            kind = "output_text" if message["role"] == "assistant" else "input_text"
            self._send({
                "type": "conversation.item.create",
                "item": {"type": "message", "role": message["role"], "content": [{"type": kind, "text": message["content"]}]},
            })

    def _send(self, event: dict) -> None:
        conn = self._conn
        if conn is None or conn.channel is None or conn.channel.readyState != "open":
            return  # nothing goes out before the channel is open (PROTOCOL.md §3)
        conn.channel.send(json.dumps(event))

    def _on_message(self, conn: _Connection, message: Any) -> None:
        conn.last_rx = time.monotonic()
        try:
            event = parse_event(message)
        except BadEvent as exc:
            self.bad_events.note(str(exc))
            return
        self._emit(ServerEvent(event["type"][:100]))
        try:
            self._handle(event)
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            self.bad_events.note(f"a malformed {event['type'][:100]} event ({type(exc).__name__})")

    def _handle(self, event: dict) -> None:
        kind = event["type"]
        if kind == "conversation.item.input_audio_transcription.completed":
            text = str(event["transcript"]).strip()
            if text:
                self._remember("user", text)
            self._emit(TranscriptDelta("user", text, True, str(event.get("item_id", ""))))
        elif kind == "conversation.item.input_audio_transcription.delta":
            self._emit(TranscriptDelta("user", str(event["delta"]), False, str(event.get("item_id", ""))))
        elif kind in ("response.output_audio_transcript.delta", "response.audio_transcript.delta"):
            self._emit(TranscriptDelta("assistant", str(event["delta"]), False, str(event.get("response_id", ""))))
        elif kind in ("response.output_audio_transcript.done", "response.audio_transcript.done"):
            turn = str(event.get("response_id", ""))
            text = str(event["transcript"]).strip()
            if text:
                self._remember("assistant", text)
            self._emit(TranscriptDelta("assistant", text, True, turn))
        elif kind == "output_audio_buffer.started":
            self._set_speaking(True)
        elif kind in ("output_audio_buffer.stopped", "output_audio_buffer.cleared"):
            self._muted_until = 0.0
            self._set_speaking(False)
        elif kind == "input_audio_buffer.speech_stopped" and self._hands_free:
            self._answer_wanted_at = time.monotonic()
        elif kind == "input_audio_buffer.speech_started" and self._hands_free and self._speaking:
            self._playout.clear()
        elif kind == "error":
            error = event.get("error") or {}
            self.bad_events.note(f"an error event: {str(error.get('message', error))[:300]}")


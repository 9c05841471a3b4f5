"""The call engine: one realtime voice call, kept alive across dropped connections.

The only I/O driver of the call. Each attempt is a Connection (connection.py); the
call's life (state.py) says where we are; ReconnectPolicy says how long to wait;
protocol.py turns messages into typed events, and the Dialogue (dialogue.py) carries
out what the turn table decides about each. The window and `talk` drive this object
and hear it through observers; nothing here knows about Qt.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

from base.errors import AuthError, ConfigError, SandraError
from core.audio import AudioIO, DeviceAudio
from core.backoff import ReconnectPolicy
from core.call import protocol
from core.call.connection import Connection, connect
from core.call.conversation import Conversation
from core.call.dialing import Dialer
from core.call.dialogue import Dialogue
from core.call.events import (EngineEvent, InputLevel, LatencyMeasured, Observers, Problem, Recovered, ServerEvent,
                              StateChanged)
from core.call.state import CallLife, CallState, Phase
from core.call.tool_runner import refuse_all
from core.call.turn import Turn
from core.config import Secrets, Settings
from core.history import BoundedHistory
from core.metrics_sender import MetricsOutlet
from core.microphone_path import MicrophonePath
from core.playout import Playout, PlayoutStats
from core.provider_catalog import kind as provider_kind
from core.sound_devices import SoundDevices
from core.telemetry import LatencyTracker
from core.tools.registry import Approver, ToolRegistry
from core.usage import DEFAULT_PRICES, Usage

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 60.0  # seconds; a larger Retry-After would look like a hang


@dataclass
class EngineOptions:
    # No open data channel this long after the provider is ready: the attempt failed.
    # (The built-in server's cold start has its own start timeout, before this one.)
    connect_timeout: float = 10.0
    stun_probe_timeout: float = 1.0
    save_transcript: bool = True  # off for the self-test, which is no conversation of the user's


class CallEngine:
    def __init__(self, settings: Settings, *, audio: AudioIO | None = None, api_key: str | None = None,
                 secrets: Secrets | None = None, options: EngineOptions | None = None,
                 policy: ReconnectPolicy | None = None, sleep: Callable[[float], Any] = asyncio.sleep,
                 provider_wrapper: Callable[[Any], Any] | None = None, tools: ToolRegistry | None = None,
                 approve: Approver = refuse_all, prices: Mapping[str, Mapping[str, float]] | None = None,
                 history: Sequence[Mapping[str, Any]] = ()) -> None:
        self.settings = settings
        self.options = options or EngineOptions()
        self._observers = Observers(log)
        self.life = CallLife()
        self.life.add_observer(lambda _old, new: self._emit(StateChanged(new)))
        self.session_id = uuid.uuid4().hex
        conversation = Conversation(self.session_id, save_transcript=self.options.save_transcript,
                                    retention_days=settings.transcript_retention_days, on_problem=self._problem,
                                    history=BoundedHistory.load(history))
        self.history = conversation.history  # what every new session is re-seeded with
        self._metrics = MetricsOutlet(settings.metrics_url, self._problem)
        self.telemetry = LatencyTracker(self.session_id, on_batch=self._on_metrics_batch)
        self._playout = Playout(on_first_audible=lambda t: self.dialogue.first_audible(t))
        self._devices = SoundDevices(
            audio or DeviceAudio(settings.input_device, settings.output_device), self._playout.read,
            on_level=lambda dbfs: self._emit(InputLevel(dbfs)), on_problem=self._problem,
            on_recovered=lambda message: self._emit(Recovered(message)))
        self.microphone = MicrophonePath(self._playout, on_voice=lambda: self.dialogue.voice_barge_in())
        self.dialogue = Dialogue(
            turn=Turn(hands_free=settings.hands_free), conversation=conversation, tools=tools or ToolRegistry(),
            usage=Usage(self.model, prices or DEFAULT_PRICES), approve=approve,
            playout=self._playout, send=self._send, emit=self._emit, record=self._record,
            drain=self._devices.finish_capture, discard=self._devices.discard)
        self.reconnects = 0
        self.bad_events = protocol.BadEventLog(log)  # what the server sent that was ignored
        self._policy = policy or ReconnectPolicy()
        self._sleep = sleep
        self._dialer = Dialer(settings, secrets or Secrets(api_key=api_key),
                              stun_probe_timeout=self.options.stun_probe_timeout, provider_wrapper=provider_wrapper)
        self._conn: Connection | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._retry_after: float | None = None  # a 429's Retry-After, for the next delay

    @property
    def state(self) -> CallState:
        return self.life.state

    @property
    def provider_label(self) -> str:
        return provider_kind(self.settings.provider).label

    @property
    def model(self) -> str:
        described = provider_kind(self.settings.provider)
        return self.settings.model if described.free_model and self.settings.model else described.default_model

    def playout_stats(self) -> PlayoutStats:  # benchmarks measure concealed gaps with them
        return self._playout.stats()

    def subscribe(self, observer: Callable[[EngineEvent], None]) -> Callable[[], None]:
        return self._observers.subscribe(observer)

    def _emit(self, event: EngineEvent) -> None:
        self._observers.emit(event)

    def _problem(self, message: str, fatal: bool = False) -> None:
        log.warning("%s", message)
        self._emit(Problem(message, fatal))

    async def start(self) -> None:
        """Begin the call (or redial after it ended). Failures arrive as events, never raised."""
        if self._run_task is not None and not self._run_task.done():
            return
        self._policy.reset()
        self.dialogue.bind(asyncio.get_running_loop())
        self.dialogue.conversation.open()
        self.microphone.configure(self.settings, self.dialogue.turn.hands_free)
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
            await asyncio.gather(task, return_exceptions=True)
        await self._teardown()
        if self.state.phase not in (Phase.ENDED, Phase.IDLE):
            self.life.ended("You hung up.")

    async def close(self) -> None:
        """Hang up and release everything: devices, the local server, HTTP, metrics."""
        await self.hang_up()
        await self.dialogue.close()
        await self._devices.close()
        await self._metrics.close()
        await self._dialer.close()

    def press(self) -> None:
        """Push-to-talk down (also every autorepeat press). While the answer plays, it interrupts."""
        self.dialogue.press()

    def release(self) -> None:
        """Push-to-talk up: the turn ends unless a press follows at once (X11 autorepeat)."""
        self.dialogue.release()

    def send_text(self, text: str) -> None:
        """A typed user turn, answered in voice and text."""
        self.dialogue.send_text(text)

    async def set_hands_free(self, on: bool) -> None:
        self.dialogue.turn.set_hands_free(on)
        self.microphone.configure(self.settings, self.dialogue.turn.hands_free)
        self._send(protocol.mode_update(self._session_options()))

    async def set_devices(self, input_device: str | None, output_device: str | None) -> None:
        """Switch sound devices during a call, without reconnecting."""
        if isinstance(self._devices.audio, DeviceAudio):
            try:
                await self._devices.switch(DeviceAudio(input_device, output_device))
            except SandraError as exc:
                self._problem(str(exc))

    def _read_input(self) -> np.ndarray | None:
        """What the outgoing track sends now: the microphone while the turn has it open."""
        return self.microphone.process(self._devices.read_timed_frame()) if self.dialogue.turn.mic_open else None

    def _input_held_back(self) -> bool:
        """Frames to send at once (only while the microphone is open: else they would never go)."""
        return self.dialogue.turn.mic_open and self.microphone.held_back

    def _record(self, name: str, ms: float) -> None:
        self.telemetry.record(name, ms)
        self._emit(LatencyMeasured(name, ms))

    def _on_metrics_batch(self, payload: dict) -> None:
        self._metrics.submit({**payload, "usage": self.dialogue.usage.to_json()})

    async def _run(self) -> None:
        try:
            while (reason := await self._one_connection()) is not None:
                await self._teardown()
                self._policy.disconnected(time.monotonic())
                delay = self._policy.next_delay()
                if delay is None:
                    message = (f"The connection was lost and {self._policy.max_attempts} attempts to reconnect "
                               f"failed ({reason}). Check the network and the provider in Settings, then press "
                               "Reconnect.")
                    self.life.ended(message)
                    self._problem(message, fatal=True)
                    return
                if self._retry_after:  # the provider said when to come back; sooner is refused again
                    delay = max(delay, min(self._retry_after, MAX_RETRY_AFTER))
                self.reconnects += 1
                self.life.reconnecting(self._policy.attempt, self._policy.max_attempts, delay)
                await self._sleep(delay)
                self.life.connecting(self._policy.attempt, self._policy.max_attempts)
            await self._teardown()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the engine's boundary: a bug ends the call, readably
            log.exception("call failed unexpectedly")
            await self._teardown()
            message = f"The call stopped because of an internal error ({type(exc).__name__}). Press Reconnect."
            if self.state.phase is not Phase.ENDED:
                self.life.ended(message)
            self._problem(message, fatal=True)

    async def _one_connection(self) -> str | None:
        """Connect and stay connected; returns why the connection ended (None: the call is over)."""
        self._retry_after = None
        started = time.monotonic()
        try:
            provider = await self._dialer.provider()
            configuration = await self._dialer.configuration(provider)
            self._conn = await asyncio.wait_for(connect(
                provider, self._dialer.http, protocol.session_config(self._session_options()), configuration,
                read_input=self._read_input, input_held_back=self._input_held_back,
                wakeup=self._devices.frame_wakeup, on_message=self._on_message,
                playout=self._playout, accepts_audio=self.dialogue.accepts_audio, record=self._record,
            ), self.options.connect_timeout)
        except (AuthError, ConfigError) as exc:  # retrying cannot fix a wrong key, setting or empty account
            self.life.ended(str(exc))
            self._problem(str(exc), fatal=True)
            return None
        except asyncio.TimeoutError:
            self._dialer.failed_attempts += 1
            return f"no connection within {self.options.connect_timeout:.0f} s"
        except SandraError as exc:
            self._dialer.failed_attempts += 1
            self._retry_after = getattr(exc, "retry_after", None)
            self._problem(str(exc))
            return str(exc)
        except (OSError, aiohttp.ClientError, ValueError) as exc:
            self._dialer.failed_attempts += 1
            return f"{type(exc).__name__}: {exc}"
        self._dialer.failed_attempts = 0
        self._policy.connected(time.monotonic())
        self.dialogue.reset()
        self.life.connected()
        self._record("connect", (time.monotonic() - started) * 1000)
        self._send(protocol.full_session_update(self._session_options()))
        for event in protocol.reseed(self.history.messages()):
            self._send(event)
        return await self._conn.lost

    async def _teardown(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
        self.dialogue.reset()

    def _session_options(self) -> protocol.SessionOptions:
        return protocol.session_options(self.settings, self.model, self.dialogue.turn.hands_free,
                                        self.dialogue.tools.registry.session_tools())

    def _send(self, event: protocol.ClientEvent) -> bool:
        return self._conn is not None and self._conn.send(event)

    def _on_message(self, message: Any) -> None:
        try:
            kind, event = protocol.parse_server_event(message)
        except protocol.BadEvent as exc:
            self.bad_events.note(str(exc))
            return
        self._emit(ServerEvent(kind))
        try:
            self._handle(event)
        except Exception:  # aiortc would let it kill the data channel: one bad event must not end the call
            log.exception("could not handle a %s event", kind)
            self.bad_events.note(f"an unhandled {kind} event")

    def _handle(self, event: protocol.ServerEvent) -> None:
        self.dialogue.handle(event)
        if isinstance(event, protocol.ResponseDone) and event.status == "completed":
            self._policy.proven()  # a completed turn proves the connection
        elif isinstance(event, protocol.ServerError):
            self.bad_events.note(f"an error event: {event.message}")

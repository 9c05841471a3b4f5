"""One WebRTC call: the peer connection, the `oai-events` protocol and the turns.

The call owns its RTCPeerConnection, its outgoing OutputTrack and the tasks that read
the caller's audio and answer. Every way a call can end (hang-up, failed ICE, no
connection in time, a fault flag, server shutdown) goes through close(), which is
idempotent and logs the one line per call.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from base.pcm import FRAME_SAMPLES, RATE
from base.inline_decoding import hook_inline_decoding
from base.jitter_buffer import hook_adaptive_jitter_buffer
from server.realtime import events
from server.realtime.audio_out import OutputTrack, Pacing
from server.realtime.events import ClientEvent, EventError, new_id, server_event
from server.realtime.responder import Answer, ToolRequest, answer_tool_output
from server.realtime.session import SessionConfig, SessionError, apply_session_update
from server.realtime.speech import Listening, SpeechEngine
from server.realtime.vad import EnergyVad, VadKind

log = logging.getLogger(__name__)

# A turn longer than this keeps only its newest part (memory stays bounded).
MAX_TURN_S = 60
# Frames the client sent just before its commit may still be in the jitter buffer and the
# decoder (loopback: one or two): the commit waits for this many more, at most this long.
IN_FLIGHT_FRAMES = 2
IN_FLIGHT_WAIT_S = 0.08
# A commit shorter than this is refused, as OpenAI does.
MIN_COMMIT_MS = 100
CHANNEL_LABEL = "oai-events"
# The conversation role of a function_call_output (its content is the output text).
TOOL_ROLE = "tool"


class Mode(enum.Enum):
    ASSISTANT = "assistant"
    ECHO = "echo"


@dataclass(frozen=True)
class CallOptions:
    mode: Mode = Mode.ASSISTANT
    connect_timeout_s: float = 20.0
    drop_after_s: float | None = None  # fault: end each call after this long
    stall_datachannel: bool = False  # fault: send no events at all
    quiet_audio: bool = False  # no RTP while not answering (a provider with DTX)


def mono_samples(frame: AudioFrame) -> np.ndarray:
    """A decoded (packed s16) frame as int16 mono: the first channel."""
    channels = len(frame.layout.channels)
    samples = frame.to_ndarray().reshape(-1, channels)[:, 0]
    return np.ascontiguousarray(samples, dtype=np.int16)


@dataclass
class _Response:
    id: str
    task: asyncio.Task[None]


class RealtimeCall:
    def __init__(self, call_id: str, session: SessionConfig, options: CallOptions,
                 speech: SpeechEngine | None, on_closed: Callable[[RealtimeCall], None]) -> None:
        self.id = call_id
        self.session = session
        self.session_id = events.new_id("sess")
        self._options = options
        self._speech = speech
        self._on_closed = on_closed
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._out = OutputTrack(Pacing.PASS_THROUGH if options.mode is Mode.ECHO else Pacing.CLOCK,
                                quiet=options.quiet_audio)
        self._channel: RTCDataChannel | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._input: collections.deque[np.ndarray] = collections.deque(maxlen=MAX_TURN_S * RATE // FRAME_SAMPLES)
        self._vad = self._new_vad()
        # The turn being recognised while it is spoken; None: recognise at commit instead.
        self._listening: Listening | None = None
        self._frames_in = 0  # input frames received: a commit waits for those in flight
        self._held: list[ClientEvent] | None = None  # events that came while a commit waited
        self._conversation: list[dict[str, str]] = []
        self._answered_upto = 0  # conversation items before this index have been answered
        self._tool_calls: dict[str, ToolRequest] = {}  # call_id → the function call this call's answers made
        self._transcription: asyncio.Task[None] | None = None
        self._response: _Response | None = None
        # output_audio_buffer.cleared names the response whose audio the buffer held.
        self._last_response_id: str | None = None
        self._assistant_audio_sent = False  # from then on the voice is fixed, as at OpenAI
        self._started = time.monotonic()
        self._connected_at: float | None = None
        self._closed = False
        self._close_reason = ""
        self.turns = 0
        self.errors_sent = 0

    # ---- set-up and tear-down -------------------------------------------------------

    async def accept(self, offer_sdp: str) -> str:
        """Answer the offer; the call then runs by itself until close()."""
        pc = self._pc
        # aiortc's stock buffer holds 4 packets (80 ms) and stays deep after a loss;
        # the app's adaptive one releases in-order audio at once (DESIGN.md).
        hook_adaptive_jitter_buffer(pc)
        hook_inline_decoding(pc)  # no decoder thread hop per frame (base/inline_decoding.py)
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        pc.addTrack(self._out)
        await pc.setLocalDescription(await pc.createAnswer())
        self._spawn(self._watch_connect(), "connect-watch")
        if self._options.drop_after_s is not None:
            self._spawn(self._drop_later(self._options.drop_after_s), "fault-drop")
        return pc.localDescription.sdp

    async def close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        self._out.stop()
        self._listen(False)
        await self._pc.close()
        await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)
        connected = f"connected after {self._connected_at - self._started:.2f} s" if self._connected_at \
            else "never connected"
        self._on_closed(self)
        # The task count lets a soak test see leaks from outside the process.
        log.info("call %s ended after %.1f s (%s, %s mode): %d turns, %d error events, reason: %s; "
                 "tasks alive %d", self.id, time.monotonic() - self._started, connected, self._options.mode.value,
                 self.turns, self.errors_sent, reason, len(asyncio.all_tasks()))

    @property
    def closed(self) -> bool:
        return self._closed

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.id}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call %s: task %s failed", self.id, task.get_name(), exc_info=task.exception())
            self._spawn_close("internal error")

    def _spawn_close(self, reason: str) -> None:
        if not self._closed:
            # Not tracked in _tasks: close() cancels those and must not cancel itself.
            asyncio.get_running_loop().create_task(self.close(reason), name=f"{self.id}-close")

    async def _watch_connect(self) -> None:
        await asyncio.sleep(self._options.connect_timeout_s)
        if self._connected_at is None:
            self._spawn_close(f"not connected within {self._options.connect_timeout_s:.0f} s")

    async def _drop_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._spawn_close(f"fault flag: dropped after {seconds:g} s")

    def _on_connection_state(self) -> None:
        state = self._pc.connectionState
        if state == "connected" and self._connected_at is None:
            self._connected_at = time.monotonic()
        elif state in ("failed", "closed"):
            self._spawn_close(f"connection {state}")

    # ---- media -------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._read_input(track), "input")

    async def _read_input(self, track: MediaStreamTrack) -> None:
        echo = self._options.mode is Mode.ECHO
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            samples = mono_samples(frame)
            self._frames_in += 1
            if echo:
                self._out.push(samples, frame.pts)
                continue
            if self._listening is not None and len(self._input) == self._input.maxlen:
                self._listen(False)  # the turn outgrew the buffer: recognise what is kept, at commit
            self._input.append(samples)
            if self._listening is not None:
                self._listening.feed(samples)
            if self.session.turn_detection is not None:
                self._hands_free(samples)

    def _new_vad(self) -> EnergyVad | None:
        detection = self.session.turn_detection
        if detection is None:
            return None
        return EnergyVad(threshold=detection.threshold, silence_ms=detection.silence_duration_ms)

    def _hands_free(self, samples: np.ndarray) -> None:
        detection = self.session.turn_detection
        if self._vad is None or detection is None:
            return
        event = self._vad.push(samples)
        if not self._vad.in_speech and event is None:
            # Between turns keep only the padding that will precede the next one.
            keep = max(1, detection.prefix_padding_ms * RATE // 1000 // FRAME_SAMPLES + 3)
            while len(self._input) > keep:
                self._input.popleft()
        if event is None:
            return
        ms = event.sample * 1000 // RATE
        if event.kind is VadKind.SPEECH_STARTED:
            self._listen(True)
            self._send(server_event("input_audio_buffer.speech_started", audio_start_ms=ms, item_id=new_id("item")))
            if self._response is not None and self._interrupt():
                self._send_cleared()  # as OpenAI does when VAD cuts audio that was playing
        else:
            self._send(server_event("input_audio_buffer.speech_stopped", audio_end_ms=ms, item_id=new_id("item")))
            if self._commit(None):
                self._start_response()

    # ---- events ------------------------------------------------------------------

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != CHANNEL_LABEL or self._channel is not None:
            log.debug("call %s: ignoring data channel %r", self.id, channel.label)
            return
        self._channel = channel
        channel.on("message", self._on_message)
        self._send(server_event("session.created", session=self.session.to_json(self.session_id)))

    def _send(self, event: dict[str, Any]) -> None:
        if self._options.stall_datachannel or self._closed:
            return
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            if event["type"] == "error":
                self.errors_sent += 1
            channel.send(json.dumps(event))

    def _on_message(self, message: str | bytes) -> None:
        try:
            event = events.parse_client_event(message)
        except EventError as exc:
            log.debug("call %s: refused an event: %s", self.id, exc)
            self._send(exc.to_event())
            return
        if self._held is not None:  # a commit waits for audio in flight: keep the events' order
            self._held.append(event)
            return
        self._handle(event)

    def _handle(self, event: ClientEvent) -> None:
        try:
            self._dispatch(event)
        except EventError as exc:
            log.debug("call %s: refused an event: %s", self.id, exc)
            self._send(exc.to_event())
        except Exception:  # noqa: BLE001 - a bug here must cost one event, not the call
            log.exception("call %s: failed to handle an event", self.id)
            self._send(server_event("error", error={"type": "server_error", "code": "internal_error",
                                                    "message": "The server failed to handle this event.",
                                                    "param": None, "event_id": None}))

    def _dispatch(self, event: ClientEvent) -> None:
        kind = event.type
        if kind == "session.update":
            self._update_session(event)
        elif kind == "input_audio_buffer.clear":
            self._input.clear()
            if self._vad is not None:
                self._vad.reset()
            self._listen(self.session.turn_detection is None)  # push-to-talk: the turn starts now
            self._send(server_event("input_audio_buffer.cleared"))
        elif kind == "input_audio_buffer.commit":
            self._held = []
            self._spawn(self._commit_after_audio_in_flight(event.event_id), "commit")
        elif kind == "input_audio_buffer.append":
            raise EventError("Over WebRTC the audio goes on the media track, not in input_audio_buffer.append.",
                             code="unsupported_event", param="type", event_id=event.event_id)
        elif kind == "response.create":
            events.optional_object(event, "response")
            if self._response is not None:
                raise EventError("A response is already in progress; cancel it first.",
                                 code="conversation_already_has_active_response", event_id=event.event_id)
            self._start_response()
        elif kind == "response.cancel":
            if self._response is None:
                raise EventError("There is no response in progress to cancel.",
                                 code="response_cancel_not_active", event_id=event.event_id)
            self._interrupt()
        elif kind == "output_audio_buffer.clear":
            self._out.clear()
            self._send_cleared()
        elif kind == "conversation.item.create":
            self._add_item(event)

    def _update_session(self, event: ClientEvent) -> None:
        try:
            self.session = apply_session_update(self.session, event.body.get("session"),
                                                voice_locked=self._assistant_audio_sent)
        except SessionError as exc:
            raise EventError(str(exc), code=exc.code, param=exc.param, event_id=event.event_id) from exc
        self._vad = self._new_vad()
        self._listen(False)
        self._send(server_event("session.updated", session=self.session.to_json(self.session_id)))

    def _add_item(self, event: ClientEvent) -> None:
        previous = new_id("item") if self._conversation else None
        item_id = new_id("item")
        if events.item_type(event) == "function_call_output":
            result = events.function_output(event)
            if result.call_id not in self._tool_calls:
                raise EventError(f"No function call with call_id {result.call_id[:80]!r} in this conversation.",
                                 code="invalid_value", param="item.call_id", event_id=event.event_id)
            self._conversation.append({"role": TOOL_ROLE, "content": result.output, "call_id": result.call_id})
            item = {"id": item_id, "object": "realtime.item", "type": "function_call_output", "status": "completed",
                    "call_id": result.call_id, "output": result.output}
        else:
            text = events.conversation_text(event)
            self._conversation.append({"role": text.role, "content": text.text})
            part = "output_text" if text.role == "assistant" else "input_text"
            item = {"id": item_id, "object": "realtime.item", "type": "message", "status": "completed",
                    "role": text.role, "content": [{"type": part, "text": text.text}]}
        self._send(server_event("conversation.item.created", previous_item_id=previous, item=item))

    async def _commit_after_audio_in_flight(self, event_id: str | None) -> None:
        """The client sends its last frames just before the commit, but they come by RTP,
        through the jitter buffer and the decoder, while the commit overtakes them on the
        data channel: wait for them, or the last word is cut."""
        arrived, deadline = self._frames_in, time.monotonic() + IN_FLIGHT_WAIT_S
        try:
            while self._frames_in < arrived + IN_FLIGHT_FRAMES and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            self._handle_commit(event_id)
        finally:
            held, self._held = self._held or [], None
            for event in held:
                self._handle(event)

    def _handle_commit(self, event_id: str | None) -> None:
        try:
            self._commit(event_id)
        except Exception:  # noqa: BLE001 - as any event: a bug costs the turn, not the call
            log.exception("call %s: failed to commit", self.id)

    def _commit(self, event_id: str | None) -> bool:
        samples = len(self._input) * FRAME_SAMPLES
        if samples * 1000 // RATE < MIN_COMMIT_MS:
            if event_id is not None or self.session.turn_detection is None:
                self._send(EventError(f"The input audio buffer holds less than {MIN_COMMIT_MS} ms of audio.",
                                      code="input_audio_buffer_commit_empty", event_id=event_id).to_event())
            return False
        pcm = np.concatenate(list(self._input))
        self._input.clear()
        listening, self._listening = self._listening, None
        item_id = new_id("item")
        self._send(server_event("input_audio_buffer.committed", previous_item_id=None, item_id=item_id))
        self.turns += 1
        self._transcription = self._spawn(self._transcribe(item_id, pcm, listening), "transcribe")
        return True

    def _listen(self, start: bool) -> None:
        """End the turn being recognised, if any; start recognising a new one as it is spoken."""
        if self._listening is not None:
            self._listening.cancel()
            self._listening = None
        if start and self._speech is not None:
            self._listening = self._speech.listen()
            for samples in self._input:  # hands-free: the prefix padding and the speech start
                self._listening.feed(samples)

    async def _transcribe(self, item_id: str, pcm: np.ndarray, listening: Listening | None) -> None:
        transcript = ""
        if self._speech is not None:
            committed = time.monotonic()
            try:
                # Not listened to (the turn began before a clear, or outgrew the buffer): all of it now.
                heard = await (listening.finish() if listening is not None else self._speech.recognize(pcm))
            except Exception:  # noqa: BLE001 - an unheard turn is answered "sorry", the call goes on
                log.exception("call %s: recognition failed", self.id)
                heard = None
            if heard is not None:
                log.debug("call %s: heard %r (accepted %s, score %.1f, streamed %s): recognised %.0f ms after the "
                          "commit, decoding %.0f ms of it", self.id, heard.text, heard.accepted, heard.score,
                          listening is not None, (time.monotonic() - committed) * 1000, heard.elapsed_ms)
            if heard is not None and heard.accepted and heard.text:
                transcript = heard.text
                self._conversation.append({"role": "user", "content": transcript})
            else:
                # A turn was taken but not understood: answer it with "sorry", not with history.
                self._conversation.append({"role": "user", "content": ""})
        self._send(server_event("conversation.item.input_audio_transcription.completed", item_id=item_id,
                                content_index=0, transcript=transcript,
                                usage={"type": "duration", "seconds": round(len(pcm) / RATE, 3)}))

    # ---- responses ---------------------------------------------------------------

    def _start_response(self) -> None:
        response_id = self._last_response_id = new_id("resp")
        self._response = _Response(response_id, self._spawn(self._respond(response_id), "respond"))

    def _send_cleared(self) -> None:
        # OpenAI's event requires a response id; before any response the buffer never held audio.
        if self._last_response_id is not None:
            self._send(server_event("output_audio_buffer.cleared", response_id=self._last_response_id))

    def _interrupt(self) -> bool:
        """Barge-in: the audio stops at the next frame and the response ends cancelled.

        True when answer audio was playing or queued (and is now cut)."""
        cut = self._out.clear()
        if self._response is not None:
            self._response.task.cancel()
        return cut

    @staticmethod
    def _response_json(response_id: str, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": response_id, "object": "realtime.response", "status": status, "output": output,
                "output_modalities": ["audio"],
                "usage": {"total_tokens": 0, "input_tokens": 0, "output_tokens": 0}}

    async def _respond(self, response_id: str) -> None:
        self._send(server_event("response.created", response=self._response_json(response_id, "in_progress", [])))
        output: list[dict[str, Any]] = []
        status = "completed"
        try:
            if self._transcription is not None:
                await asyncio.shield(self._transcription)
            if self._speech is not None:
                output = await self._reply(response_id)
        except asyncio.CancelledError:
            status = "cancelled"
        except Exception:  # noqa: BLE001 - a failed answer ends this response, not the call
            log.exception("call %s: the answer failed", self.id)
            self._out.clear()
            status = "failed"
        finally:
            self._response = None
        self._send(server_event("response.done", response=self._response_json(response_id, status, output)))

    async def _reply(self, response_id: str) -> list[dict[str, Any]]:
        """Answer the newest unanswered user turn or tool output: the response's output items.

        A turn a declared tool can answer gets a function call instead; the client's
        function_call_output and response.create then bring the spoken answer.
        Raises CancelledError when cut; the turn then stays unanswered."""
        assert self._speech is not None
        unanswered = self._conversation[self._answered_upto:]
        last = next((i for i in reversed(unanswered) if i["role"] in ("user", TOOL_ROLE)), None)
        if last is not None and last["role"] == TOOL_ROLE:
            answer = answer_tool_output(self._tool_calls.get(last["call_id"]), last["content"])
        else:
            heard = last["content"] or None if last else None
            request = self._speech.responder.tool_request(heard, self.session.tool_names)
            if request is not None:
                self._answered_upto = len(self._conversation)
                return [self._call_tool(response_id, request)]
            history = [i for i in self._conversation if i is not last and i["content"] and i["role"] != TOOL_ROLE]
            answer = self._speech.answer(heard, history)
        item = await self._speak(response_id, answer)
        self._conversation.append({"role": "assistant", "content": answer.text})
        self._answered_upto = len(self._conversation)
        return [item]

    def _call_tool(self, response_id: str, request: ToolRequest) -> dict[str, Any]:
        """Send a function call as OpenAI does; the completed function_call item."""
        call_id = new_id("call")
        arguments = request.arguments_json()
        self._tool_calls[call_id] = request
        item = {"id": new_id("item"), "object": "realtime.item", "type": "function_call", "status": "in_progress",
                "call_id": call_id, "name": request.name, "arguments": ""}
        common = {"response_id": response_id, "output_index": 0}
        ids = {"item_id": item["id"], "call_id": call_id}
        self._send(server_event("response.output_item.added", item=item, **common))
        self._send(server_event("response.function_call_arguments.delta", delta=arguments, **ids, **common))
        self._send(server_event("response.function_call_arguments.done", name=request.name, arguments=arguments,
                                **ids, **common))
        done = {**item, "status": "completed", "arguments": arguments}
        self._send(server_event("response.output_item.done", item=done, **common))
        log.debug("call %s: called %s(%s) as %s", self.id, request.name, arguments, call_id)
        return done

    async def _speak(self, response_id: str, answer: Answer) -> dict[str, Any]:
        """Say the answer (its transcript, then its audio); the completed message item.

        Raises CancelledError when the audio is cut."""
        assert self._speech is not None
        text = answer.text  # the written form is shown and remembered; the spoken form is said
        asked = time.monotonic()
        item_id = new_id("item")
        common = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        self._send(server_event("response.output_audio_transcript.delta", delta=text, **common))
        self._send(server_event("response.output_audio_transcript.done", transcript=text, **common))
        playback = self._out.play(await self._speech.synthesize(answer.spoken, self.session.voice))
        synthesized = time.monotonic()
        await playback.started
        self._assistant_audio_sent = self._assistant_audio_sent or playback.sent > 0
        log.debug("call %s: answer synthesized in %.0f ms, first frame out %.0f ms later", self.id,
                  (synthesized - asked) * 1000, (time.monotonic() - synthesized) * 1000)
        self._send(server_event("output_audio_buffer.started", response_id=response_id))
        if not await playback.finished:
            raise asyncio.CancelledError
        self._send(server_event("output_audio_buffer.stopped", response_id=response_id))
        return {"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant",
                "status": "completed", "content": [{"type": "output_audio", "transcript": text}]}

"""The realtime wire protocol, sans I/O: data-channel text <-> typed events (PROTOCOL.md §3).

`parse_server_event` turns one untrusted message into a typed event (or raises
BadEvent saying why not); client events are dataclasses that `encode` turns into the
JSON the server expects. The session the client asks for, and the items that re-seed
a new session with the kept conversation, are built here too. Nothing here sends,
sleeps or reads a clock: the engine does that.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from core.config import Settings

MAX_EVENT_BYTES = 256 * 1024  # a server event bigger than this is not JSON we want to parse
MAX_TYPE_CHARS = 100


class BadEvent(ValueError):
    """A message that is not an event we can use; the text says what it was, for the log."""


# --- the session we ask for ---------------------------------------------------------------


@dataclass(frozen=True)
class SessionOptions:
    """What the user chose that goes into the session (PROTOCOL.md §1, the GA shape)."""

    model: str
    instructions: str
    voice: str
    transcription_model: str
    hands_free: bool = False
    # "server_vad" or "semantic_vad" (with eagerness) when hands-free.
    vad: str = "server_vad"
    eagerness: str = "auto"
    noise_reduction: str | None = None  # near_field | far_field | None (off)
    language: str = ""  # transcription language, ISO-639-1; "" lets the server guess
    tools: tuple[Mapping[str, Any], ...] = ()


def session_options(settings: Settings, model: str, hands_free: bool,
                    tools: Iterable[Mapping[str, Any]]) -> SessionOptions:
    """The user's settings as the session sees them (the mode is the call's, not the file's)."""
    return SessionOptions(model=model, instructions=settings.instructions, voice=settings.voice,
                          transcription_model=settings.transcription_model, hands_free=hands_free, vad=settings.vad,
                          eagerness=settings.eagerness, noise_reduction=settings.noise_reduction or None,
                          language=settings.language, tools=tuple(tools))


def turn_detection(options: SessionOptions) -> dict[str, Any] | None:
    """None is push-to-talk: the client commits each turn itself."""
    if not options.hands_free:
        return None
    if options.vad == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": options.eagerness}
    return {"type": "server_vad"}


def session_config(options: SessionOptions, *, with_model: bool = True) -> dict[str, Any]:
    """The whole session: in the key request (with the model) and the first session.update."""
    transcription: dict[str, Any] = {"model": options.transcription_model}
    if options.language:
        transcription["language"] = options.language
    audio_input: dict[str, Any] = {
        "turn_detection": turn_detection(options),
        "transcription": transcription,
        "noise_reduction": {"type": options.noise_reduction} if options.noise_reduction else None,
    }
    config: dict[str, Any] = {"type": "realtime"}
    if with_model:
        config["model"] = options.model
    config["instructions"] = options.instructions
    config["audio"] = {"input": audio_input, "output": {"voice": options.voice}}
    if options.tools:
        config["tools"] = [dict(tool) for tool in options.tools]
        config["tool_choice"] = "auto"
    return config


# --- client events ------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionUpdate:
    session: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"type": "session.update", "session": dict(self.session)}


def tools_update(tools: Iterable[Mapping[str, Any]]) -> SessionUpdate:
    """The tools on offer changed mid-call (an MCP server came or went): only those."""
    return SessionUpdate({"type": "realtime", "tools": [dict(tool) for tool in tools], "tool_choice": "auto"})


def full_session_update(options: SessionOptions) -> SessionUpdate:
    """The first update of a new session: everything, the voice included (no audio yet)."""
    return SessionUpdate(session_config(options, with_model=False))


def mode_update(options: SessionOptions) -> SessionUpdate:
    """A mid-call switch of hands-free: only the turn detection; never the voice, which a
    server refuses to change once audio has played."""
    return SessionUpdate({"type": "realtime", "audio": {"input": {"turn_detection": turn_detection(options)}}})


@dataclass(frozen=True)
class _Simple:
    TYPE = ""

    def to_json(self) -> dict[str, Any]:
        return {"type": self.TYPE}


@dataclass(frozen=True)
class ClearInput(_Simple):
    TYPE = "input_audio_buffer.clear"


@dataclass(frozen=True)
class CommitInput(_Simple):
    TYPE = "input_audio_buffer.commit"


@dataclass(frozen=True)
class CreateResponse(_Simple):
    TYPE = "response.create"


@dataclass(frozen=True)
class CancelResponse(_Simple):
    TYPE = "response.cancel"


@dataclass(frozen=True)
class ClearOutput(_Simple):
    TYPE = "output_audio_buffer.clear"


@dataclass(frozen=True)
class CreateMessage:
    """A conversation message: a typed turn, or one kept message re-seeding a new session."""

    role: str  # user | assistant
    text: str

    def to_json(self) -> dict[str, Any]:
        part = "output_text" if self.role == "assistant" else "input_text"
        return {"type": "conversation.item.create",
                "item": {"type": "message", "role": self.role, "content": [{"type": part, "text": self.text}]}}


@dataclass(frozen=True)
class FunctionCallOutput:
    call_id: str
    output: str

    def to_json(self) -> dict[str, Any]:
        return {"type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": self.call_id, "output": self.output}}


ClientEvent = Union[SessionUpdate, ClearInput, CommitInput, CreateResponse, CancelResponse, ClearOutput,
                    CreateMessage, FunctionCallOutput]


def encode(event: ClientEvent) -> str:
    return json.dumps(event.to_json())


def reseed(messages: Iterable[Mapping[str, str]]) -> list[ClientEvent]:
    """A new session knows nothing: the kept conversation, oldest first."""
    return [CreateMessage(m["role"], m["content"]) for m in messages if m.get("role") in ("user", "assistant")]


# --- server events ------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionChanged:
    """session.created / session.updated: the mode the server is really in."""

    hands_free: bool


@dataclass(frozen=True)
class SpeechStarted:
    pass


@dataclass(frozen=True)
class SpeechStopped:
    pass


@dataclass(frozen=True)
class Transcript:
    """Part (`final` False) or the whole (`final` True) of a user or assistant turn's text."""

    role: str
    text: str
    final: bool
    turn_id: str


@dataclass(frozen=True)
class AudioStarted:
    pass


@dataclass(frozen=True)
class AudioStopped:
    cut: bool  # output_audio_buffer.cleared: the answer was interrupted


@dataclass(frozen=True)
class FunctionCall:
    call_id: str
    name: str
    arguments: str  # JSON text, as the model wrote it
    response_id: str | None = None


@dataclass(frozen=True)
class FunctionCallSeen:
    """The model called a tool (response.function_call_arguments.done or a function_call item done)."""

    call: FunctionCall


@dataclass(frozen=True)
class ResponseDone:
    status: str
    usage: Mapping[str, Any] = field(default_factory=dict)
    calls: tuple[FunctionCall, ...] = ()
    id: str | None = None


@dataclass(frozen=True)
class ServerError:
    message: str
    code: str = ""


@dataclass(frozen=True)
class Other:
    """An event the client does not act on (or does not know): ignored, never a crash."""

    type: str


ServerEvent = Union[SessionChanged, SpeechStarted, SpeechStopped, Transcript, AudioStarted, AudioStopped,
                    FunctionCallSeen, ResponseDone, ServerError, Other]


def _text(event: Mapping[str, Any], key: str) -> str:
    value = event[key]
    if not isinstance(value, str):
        raise BadEvent(f"a {event['type'][:MAX_TYPE_CHARS]} event whose {key} is not text")
    return value


def _session(event: Mapping[str, Any]) -> SessionChanged:
    session = event["session"]
    detection = ((session.get("audio") or {}).get("input") or {}).get("turn_detection", session.get("turn_detection"))
    return SessionChanged(hands_free=isinstance(detection, dict))


def _function_call(item: Any, response_id: Any) -> FunctionCall | None:
    """A complete function_call item; None for any other item (or an incomplete call)."""
    if not isinstance(item, dict) or item.get("type") != "function_call" or item.get("status") == "incomplete":
        return None
    if not isinstance(item.get("call_id"), str) or not isinstance(item.get("name"), str):
        raise BadEvent("a function_call without call_id or name")
    arguments = item.get("arguments")
    return FunctionCall(item["call_id"], item["name"], arguments if isinstance(arguments, str) else "",
                        response_id if isinstance(response_id, str) else None)


def _call_seen(item: Any, response_id: Any, kind: str) -> FunctionCallSeen | Other:
    call = _function_call(item, response_id)
    return FunctionCallSeen(call) if call is not None else Other(kind)


def _response_done(event: Mapping[str, Any]) -> ResponseDone:
    response = event["response"]
    usage = response.get("usage") or {}
    response_id = response.get("id")
    calls = tuple(c for c in (_function_call(item, response_id) for item in response.get("output") or ()) if c)
    return ResponseDone(str(response.get("status", "")), usage if isinstance(usage, dict) else {}, calls,
                        response_id if isinstance(response_id, str) else None)


def _error(event: Mapping[str, Any]) -> ServerError:
    error = event.get("error") or {}
    if not isinstance(error, dict):
        return ServerError(str(error)[:300])
    return ServerError(str(error.get("message", ""))[:300], str(error.get("code") or ""))


_PARSERS: dict[str, Any] = {
    "session.created": _session,
    "session.updated": _session,
    "input_audio_buffer.speech_started": lambda e: SpeechStarted(),
    "input_audio_buffer.speech_stopped": lambda e: SpeechStopped(),
    "conversation.item.input_audio_transcription.delta":
        lambda e: Transcript("user", _text(e, "delta"), False, str(e.get("item_id", ""))),
    "conversation.item.input_audio_transcription.completed":
        lambda e: Transcript("user", _text(e, "transcript").strip(), True, str(e.get("item_id", ""))),
    "response.output_audio_transcript.delta":
        lambda e: Transcript("assistant", _text(e, "delta"), False, str(e.get("response_id", ""))),
    "response.output_audio_transcript.done":
        lambda e: Transcript("assistant", _text(e, "transcript").strip(), True, str(e.get("response_id", ""))),
    "output_audio_buffer.started": lambda e: AudioStarted(),
    "output_audio_buffer.stopped": lambda e: AudioStopped(cut=False),
    "output_audio_buffer.cleared": lambda e: AudioStopped(cut=True),
    "response.function_call_arguments.done":
        lambda e: _call_seen({**e, "type": "function_call"}, e.get("response_id"), e["type"]),
    "response.output_item.done": lambda e: _call_seen(e["item"], e.get("response_id"), e["type"]),
    "response.done": _response_done,
    "error": _error,
}
# Older servers name the answer's transcript events response.audio_transcript.*.
_PARSERS["response.audio_transcript.delta"] = _PARSERS["response.output_audio_transcript.delta"]
_PARSERS["response.audio_transcript.done"] = _PARSERS["response.output_audio_transcript.done"]


def parse_server_event(message: object) -> tuple[str, ServerEvent]:
    """One data-channel message as (its type, a typed event); BadEvent when it is not usable."""
    if not isinstance(message, str) or len(message) > MAX_EVENT_BYTES:
        raise BadEvent("a non-text or oversized message")
    try:
        raw = json.loads(message)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise BadEvent("invalid JSON") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise BadEvent("an event without a type")
    kind = raw["type"][:MAX_TYPE_CHARS]
    parser = _PARSERS.get(kind)
    if parser is None:
        return kind, Other(kind)
    try:
        return kind, parser(raw)
    except BadEvent:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise BadEvent(f"a malformed {kind} event ({type(exc).__name__})") from None


class BadEventLog:
    """Counts ignored events; logs the first few, then every thousandth."""

    def __init__(self, logger: logging.Logger, first: int = 10, every: int = 1000) -> None:
        self._log = logger
        self._first = first
        self._every = every
        self.count = 0

    def note(self, what: str) -> None:
        self.count += 1
        if self.count <= self._first or self.count % self._every == 0:
            self._log.warning("ignored %s from the server (%d so far)", what, self.count)

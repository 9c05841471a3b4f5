"""What the call engine tells its observers.

The engine (core/call/engine.py) calls each observer with one of these; gui/ turns them
into Qt signals, `talk` writes them as JSON lines. Plain frozen dataclasses so they
can cross threads and be logged safely (none carries a secret).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

from core.call.state import CallState

Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class StateChanged:
    state: CallState


@dataclass(frozen=True)
class TranscriptDelta:
    """Part of a turn as it streams in; `final` marks the complete text of the turn."""

    role: Role
    text: str
    final: bool
    turn_id: str


@dataclass(frozen=True)
class LatencyMeasured:
    name: str  # token_acquisition | sdp_exchange | connect | response_latency
    ms: float


@dataclass(frozen=True)
class InputLevel:
    dbfs: float  # -inf..0, for the meter


@dataclass(frozen=True)
class AssistantSpeaking:
    speaking: bool


@dataclass(frozen=True)
class ServerEvent:
    """Every event type the server sent, for the events log."""

    type: str


@dataclass(frozen=True)
class ModeChanged:
    """The server is now in hands-free (True) or push-to-talk: the window shows what the server does."""

    hands_free: bool


@dataclass(frozen=True)
class Hint:
    """A word of advice for the user (a hold too short to be a question); not a problem."""

    message: str


@dataclass(frozen=True)
class Problem:
    """Something the user should read; the call may go on (`fatal` False) or has ended."""

    message: str
    fatal: bool = False


EngineEvent = Union[StateChanged, TranscriptDelta, LatencyMeasured, InputLevel, AssistantSpeaking, ServerEvent,
                    ModeChanged, Hint, Problem]

"""What the call engine tells its observers.

The engine (core/call/engine.py) calls each observer with one of these; gui/ turns them
into Qt signals, `talk` writes them as JSON lines. Plain frozen dataclasses so they
can cross threads and be logged safely (none carries a secret).
"""

from __future__ import annotations

from dataclasses import dataclass
import logging
from collections.abc import Callable, Mapping
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
class ToolActivity:
    """The model called a tool (`output` None), or the call finished with `output`."""

    call_id: str
    name: str
    arguments: str
    output: str | None
    failed: bool = False


@dataclass(frozen=True)
class UsageUpdated:
    """Tokens used by the call so far, and its estimated cost (None: no price known)."""

    tokens: Mapping[str, int]
    cost_usd: float | None


@dataclass(frozen=True)
class Problem:
    """Something the user should read; the call may go on (`fatal` False) or has ended."""

    message: str
    fatal: bool = False


@dataclass(frozen=True)
class Recovered:
    """A problem went away by itself (a sound device works again): the banner can clear."""

    message: str


EngineEvent = Union[StateChanged, TranscriptDelta, LatencyMeasured, InputLevel, AssistantSpeaking, ServerEvent,
                    ModeChanged, Hint, ToolActivity, UsageUpdated, Problem, Recovered]


class Observers:
    """Who hears the engine; one observer's bug never reaches the others or the call."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._observers: list[Callable[[EngineEvent], None]] = []

    def subscribe(self, observer: Callable[[EngineEvent], None]) -> Callable[[], None]:
        self._observers.append(observer)
        return lambda: self._observers.remove(observer) if observer in self._observers else None

    def emit(self, event: EngineEvent) -> None:
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                self._log.exception("engine observer failed on %s", type(event).__name__)

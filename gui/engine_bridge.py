"""Engine observer → Qt signals.

The engine calls its observers on the asyncio loop thread. With qasync that is the Qt
thread, but a signal emitted from any other thread is queued to the receivers' thread
by Qt itself, so widgets only ever see these signals on the GUI thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

from core.call.events import (
    AssistantSpeaking,
    EngineEvent,
    Hint,
    InputLevel,
    LatencyMeasured,
    ModeChanged,
    Problem,
    ServerEvent,
    StateChanged,
    Recovered,
    ToolActivity,
    UsageUpdated,
    TranscriptDelta,
)

log = logging.getLogger(__name__)


class EngineBridge(QObject):
    """One signal per engine event type; `feed` is the observer the engine calls."""

    state_changed = Signal(object)  # CallState
    transcript = Signal(object)  # TranscriptDelta
    latency = Signal(str, float)  # name, ms
    input_level = Signal(float)  # dBFS
    assistant_speaking = Signal(bool)
    server_event = Signal(str)
    problem = Signal(str, bool)  # message, fatal
    hint = Signal(str)
    mode_changed = Signal(bool)  # hands-free
    tool_activity = Signal(object)  # ToolActivity: a tool call started (output None) or finished
    usage = Signal(object)  # UsageUpdated: tokens and cost of the call so far
    recovered = Signal(str)  # a problem went away by itself (a sound device works again)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._unsubscribe: Callable[[], None] | None = None

    def attach(self, subscribe: Callable[[Callable[[EngineEvent], None]], Callable[[], None]]) -> None:
        """Listen to an engine (pass its `subscribe`); replaces an earlier engine."""
        self.detach()
        self._unsubscribe = subscribe(self.feed)

    def detach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def feed(self, event: EngineEvent) -> None:
        if isinstance(event, StateChanged):
            self.state_changed.emit(event.state)
        elif isinstance(event, TranscriptDelta):
            self.transcript.emit(event)
        elif isinstance(event, LatencyMeasured):
            self.latency.emit(event.name, float(event.ms))
        elif isinstance(event, InputLevel):
            self.input_level.emit(float(event.dbfs))
        elif isinstance(event, AssistantSpeaking):
            self.assistant_speaking.emit(bool(event.speaking))
        elif isinstance(event, ServerEvent):
            self.server_event.emit(event.type)
        elif isinstance(event, Problem):
            self.problem.emit(event.message, bool(event.fatal))
        elif isinstance(event, Hint):
            self.hint.emit(event.message)
        elif isinstance(event, ModeChanged):
            self.mode_changed.emit(bool(event.hands_free))
        elif isinstance(event, ToolActivity):
            self.tool_activity.emit(event)
        elif isinstance(event, UsageUpdated):
            self.usage.emit(event)
        elif isinstance(event, Recovered):
            self.recovered.emit(event.message)
        else:  # a newer engine may send more; the window must not break on it
            log.debug("ignored engine event %s", type(event).__name__)

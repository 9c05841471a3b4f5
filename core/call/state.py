"""The life of one call: every state, the transitions allowed between them, observers.

Written the way h11 writes HTTP's life in its _state.py: the states are an enum, the
allowed moves are one table, and anything not in the table raises. The engine moves
the call through it; the window and `talk --events` only listen. Keeping the rules in
one place means a reconnect racing a hang-up cannot leave the call in a state nobody
planned for: the second, illegal move raises instead of being silently applied.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

log = logging.getLogger(__name__)


class Phase(str, Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    ENDED = "ended"


# Every allowed move. Anything else is a bug in the caller and raises.
ALLOWED_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.IDLE: frozenset({Phase.CONNECTING}),
    Phase.CONNECTING: frozenset({Phase.CONNECTED, Phase.RECONNECTING, Phase.ENDED}),
    Phase.CONNECTED: frozenset({Phase.RECONNECTING, Phase.ENDED}),
    Phase.RECONNECTING: frozenset({Phase.CONNECTING, Phase.ENDED}),
    # The user presses Reconnect after a call ended.
    Phase.ENDED: frozenset({Phase.CONNECTING}),
}


@dataclass(frozen=True)
class CallState:
    """A snapshot of the call; `attempt`/`max_attempts`/`delay` matter while reconnecting,
    `reason` once ended."""

    phase: Phase
    attempt: int = 0
    max_attempts: int = 0
    delay: float | None = None
    reason: str | None = None

    @property
    def active(self) -> bool:
        """A call is under way: connecting, connected or waiting to reconnect."""
        return self.phase in (Phase.CONNECTING, Phase.CONNECTED, Phase.RECONNECTING)

    def describe(self) -> str:
        """The status line a user reads."""
        if self.phase is Phase.IDLE:
            return "Not connected"
        if self.phase is Phase.CONNECTING:
            return f"Connecting… (attempt {self.attempt} of {self.max_attempts})" if self.attempt else "Connecting…"
        if self.phase is Phase.CONNECTED:
            return "Connected"
        if self.phase is Phase.RECONNECTING:
            # Round up: "in 0 s" while time is still left reads as a hang.
            seconds = math.ceil(self.delay) if self.delay is not None else 0
            return f"Reconnecting in {seconds} s, attempt {self.attempt} of {self.max_attempts}"
        return f"Call ended: {self.reason}" if self.reason else "Call ended"

    def to_json(self) -> dict[str, Any]:
        """The state as one line of the `talk --events` file."""
        out: dict[str, Any] = {"type": "state", "state": self.phase.value}
        if self.phase is Phase.RECONNECTING or (self.phase is Phase.CONNECTING and self.attempt):
            out.update(attempt=self.attempt, max=self.max_attempts)
        if self.phase is Phase.RECONNECTING:
            out["delay"] = self.delay
        if self.phase is Phase.ENDED:
            out["reason"] = self.reason
        return out


class IllegalTransition(RuntimeError):
    """A move the table does not allow: a bug in whoever asked for it."""

    def __init__(self, old: Phase, new: Phase) -> None:
        super().__init__(f"call state cannot go from {old.value} to {new.value}")
        self.old = old
        self.new = new


Observer = Callable[[CallState, CallState], None]


class CallLife:
    """Holds the current CallState, enforces the table, tells observers (old, new)."""

    def __init__(self) -> None:
        self._state = CallState(Phase.IDLE)
        self._observers: list[Observer] = []

    @property
    def state(self) -> CallState:
        return self._state

    def add_observer(self, callback: Observer) -> Callable[[], None]:
        """Call `callback(old, new)` after every change; returns a function that unsubscribes."""
        self._observers.append(callback)

        def unsubscribe() -> None:
            if callback in self._observers:
                self._observers.remove(callback)

        return unsubscribe

    def connecting(self, attempt: int = 0, max_attempts: int = 0) -> CallState:
        """Starting a connection; a reconnect's attempt number is carried on for the status line."""
        return self._move(CallState(Phase.CONNECTING, attempt=attempt, max_attempts=max_attempts))

    def connected(self) -> CallState:
        return self._move(CallState(Phase.CONNECTED))

    def reconnecting(self, attempt: int, max_attempts: int, delay: float) -> CallState:
        if attempt < 1 or max_attempts < attempt or delay < 0:
            raise ValueError(f"reconnecting: bad attempt {attempt} of {max_attempts}, delay {delay}")
        return self._move(CallState(Phase.RECONNECTING, attempt=attempt, max_attempts=max_attempts, delay=delay))

    def ended(self, reason: str) -> CallState:
        return self._move(CallState(Phase.ENDED, reason=reason))

    def _move(self, new: CallState) -> CallState:
        old = self._state
        if new.phase not in ALLOWED_TRANSITIONS[old.phase]:
            raise IllegalTransition(old.phase, new.phase)
        self._state = new
        log.info("call state: %s -> %s", old.phase.value, new.describe())
        # A copy: an observer may unsubscribe itself while being told.
        for callback in list(self._observers):
            try:
                callback(old, new)
            except Exception:  # one broken listener must not break the call or the others
                log.exception("call state observer %r failed", callback)
        return new

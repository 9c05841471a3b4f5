"""The status line: one sentence that always says what the call is doing.

Reconnecting shows a live countdown computed from CallState.delay against the
monotonic clock, so it ticks every second even when no new state arrives.
"""

from __future__ import annotations

import math
import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from core.call.state import CallState, Phase

# Re-render often enough that the shown second never lags the real one by much.
_TICK_MS = 200


class StatusLine(QWidget):
    reconnect_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("statusLine")
        # A plain QWidget paints a style-sheet background only with this attribute.
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self._dot = QLabel("●")
        self._dot.setObjectName("statusDot")
        self._label = QLabel("Not connected")
        self._label.setObjectName("statusText")
        self._label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._reconnect = QPushButton("Reconnect")
        self._reconnect.setObjectName("reconnectButton")
        self._reconnect.clicked.connect(self.reconnect_requested)
        self._reconnect.hide()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        layout.addWidget(self._dot)
        layout.addWidget(self._label, 1)
        layout.addWidget(self._reconnect)
        self._provider = ""
        self._model = ""
        self._state: CallState | None = None
        self._deadline = 0.0
        self._timer = QTimer(self)
        self._timer.setInterval(_TICK_MS)
        self._timer.timeout.connect(self._render)

    def text(self) -> str:
        return self._label.text()

    def set_provider(self, label: str, model: str) -> None:
        self._provider, self._model = label, model
        self._render()

    def set_state(self, state: CallState) -> None:
        self._state = state
        phase = state.phase
        if phase is Phase.RECONNECTING:
            self._deadline = time.monotonic() + max(0.0, float(state.delay or 0.0))
            self._timer.start()
        else:
            self._timer.stop()
        self._reconnect.setVisible(phase is Phase.ENDED)
        self._dot.setProperty("phase", phase.value)
        # A dynamic property only restyles after an unpolish/polish round trip.
        self._dot.style().unpolish(self._dot)
        self._dot.style().polish(self._dot)
        self._render()

    def _render(self) -> None:
        text = self._describe()
        if text != self._label.text():
            self._label.setText(text)

    def _describe(self) -> str:
        state = self._state
        if state is None:
            return "Not connected"
        phase = state.phase
        if phase is Phase.CONNECTING:
            where = f" to {self._provider}" if self._provider else ""
            attempt = f" (attempt {state.attempt} of {state.max_attempts})" if state.attempt else ""
            return f"Connecting{where}…{attempt}"
        if phase is Phase.CONNECTED:
            where = f" to {self._provider}" if self._provider else ""
            model = f" · model {self._model}" if self._model else ""
            return f"Connected{where}{model}. Hold the button or the space bar to talk."
        if phase is Phase.RECONNECTING:
            remaining = math.ceil(max(0.0, self._deadline - time.monotonic()))
            attempt = f"attempt {state.attempt} of {state.max_attempts}"
            if remaining <= 0:
                return f"Reconnecting now, {attempt}"
            return f"Reconnecting in {remaining} s, {attempt}"
        if phase is Phase.ENDED:
            reason = (state.reason or "").strip()
            return f"Call ended: {reason}" if reason else "Call ended."
        return "Not connected. Use Call → Connect (Ctrl+K) to start."

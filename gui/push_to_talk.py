"""The big push-to-talk button: hold to speak, release to send."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QPushButton, QSizePolicy, QWidget

_IDLE = "Hold to talk  (Space)"
_TALKING = "Listening… release to send"
_INTERRUPT = "Hold to interrupt  (Space)"
_HANDS_FREE = "Hands-free: just speak"


class PushToTalkButton(QPushButton):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(_IDLE, parent)
        self.setObjectName("pushToTalk")
        # The window handles Space itself, whichever child has focus; the button must
        # not also react to it (that would press twice).
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumHeight(84)
        self._talking = False
        self._assistant_speaking = False
        self._hands_free = False

    def set_talking(self, talking: bool) -> None:
        self._talking = talking
        self.setDown(talking)
        self._refresh()

    def set_assistant_speaking(self, speaking: bool) -> None:
        self._assistant_speaking = speaking
        self._refresh()

    def set_hands_free(self, on: bool) -> None:
        self._hands_free = on
        self._refresh()

    def _refresh(self) -> None:
        if self._talking:
            text, mode = _TALKING, "talking"
        elif self._assistant_speaking:
            text, mode = _INTERRUPT, "speaking"
        elif self._hands_free:
            text, mode = _HANDS_FREE, "handsfree"
        else:
            text, mode = _IDLE, "idle"
        self.setText(text)
        self.setProperty("mode", mode)
        self.style().unpolish(self)
        self.style().polish(self)

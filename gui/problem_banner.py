"""A banner that shows the latest Problem in words, with a way to dismiss it; hints fade by themselves."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton, QWidget


HINT_SECONDS = 4


class ProblemBanner(QFrame):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("problemBanner")
        self._label = QLabel()
        self._label.setWordWrap(True)
        self._label.setTextFormat(Qt.TextFormat.PlainText)
        self._label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton()
        close.setText("✕")
        close.setToolTip("Dismiss")
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(self._label, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self._fade = QTimer(self)
        self._fade.setSingleShot(True)
        self._fade.timeout.connect(self.hide)
        self.hide()

    def text(self) -> str:
        return self._label.text()

    def show_problem(self, message: str, fatal: bool) -> None:
        self._show(message or "Something went wrong.", "fatal" if fatal else "problem")

    def show_hint(self, message: str) -> None:
        """Advice, not a problem: shown a few seconds, unless a problem takes its place."""
        if self.isVisible() and self.property("kind") != "hint":
            return
        self._show(message, "hint")
        self._fade.start(HINT_SECONDS * 1000)

    def show_recovered(self, message: str) -> None:
        """A problem went away by itself: the problem gives way to a hint that fades."""
        if self.isVisible() and self.property("kind") == "fatal":
            return  # the call ended: that stays until the user acts
        self._show(message, "hint")
        self._fade.start(HINT_SECONDS * 1000)

    def _show(self, message: str, kind: str) -> None:
        self._fade.stop()
        # Only the first line: a message is for reading, never a traceback dump.
        first = message.strip().splitlines()[0]
        self._label.setText(first)
        self.setProperty("kind", kind)
        self.setProperty("fatal", kind == "fatal")
        self.style().unpolish(self)
        self.style().polish(self)
        self.show()

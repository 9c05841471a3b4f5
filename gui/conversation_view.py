"""The conversation as it streams in: one bubble per turn, keyed by turn id.

Deltas append to their turn; a final delta replaces the turn's text with the complete
transcript (deltas can be lost or arrive re-segmented, the final text is the truth).
"""

from __future__ import annotations

from datetime import datetime

from PySide6.QtCore import QPoint, Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFrame, QLabel, QMenu, QScrollArea, QVBoxLayout, QWidget

from core.call.events import TranscriptDelta

_ROLE_TITLE = {"user": "You", "assistant": "Sandra"}
# Turns kept on screen. Each bubble costs ~140 KB of Qt memory and layout time, so a
# day-long call must not keep them all; the whole conversation is in the transcript
# file, which Export reads. 50 matches the history the engine keeps.
MAX_TURNS = 50


class TurnBubble(QFrame):
    def __init__(self, role: str, when: datetime, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.role = role
        self.final = False
        self.setObjectName("turn")
        self.setProperty("role", role)
        header = QLabel(f"{_ROLE_TITLE.get(role, role.title())}  ·  {when.strftime('%H:%M:%S')}")
        header.setObjectName("turnHeader")
        self.body = QLabel("")
        self.body.setObjectName("turnBody")
        self.body.setWordWrap(True)
        self.body.setTextFormat(Qt.TextFormat.PlainText)
        self.body.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 8)
        layout.setSpacing(2)
        layout.addWidget(header)
        layout.addWidget(self.body)

    def text(self) -> str:
        return self.body.text()


class ConversationView(QScrollArea):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("conversation")
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._container = QWidget()
        self._container.setObjectName("conversationContainer")
        self._layout = QVBoxLayout(self._container)
        self._layout.setContentsMargins(8, 8, 8, 8)
        self._layout.setSpacing(8)
        self._placeholder = QLabel("Hold the button (or the space bar), speak, and let go.\nThe conversation appears here.")
        self._placeholder.setObjectName("placeholder")
        self._placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._layout.addWidget(self._placeholder)
        self._layout.addStretch(1)
        self.setWidget(self._container)
        self._turns: dict[str, TurnBubble] = {}
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._context_menu)

    def apply(self, delta: TranscriptDelta) -> None:
        bubble = self._turns.get(delta.turn_id)
        if bubble is None:
            bubble = self._add_turn(delta.turn_id, delta.role)
        elif bubble.final and not delta.final:
            return  # a late delta must not undo the complete text
        follow = self._at_bottom()
        bubble.body.setText(delta.text if delta.final else bubble.text() + delta.text)
        bubble.final = bubble.final or delta.final
        if follow:
            # The layout grows on the next event-loop pass; scroll after it.
            QTimer.singleShot(0, self._scroll_to_bottom)

    def turns(self) -> list[tuple[str, str]]:
        """(role, text) of every turn, oldest first."""
        return [(bubble.role, bubble.text()) for bubble in self._turns.values()]

    def clear(self) -> None:
        for bubble in self._turns.values():
            bubble.deleteLater()
        self._turns.clear()
        self._placeholder.show()

    def as_text(self) -> str:
        return "\n\n".join(f"{_ROLE_TITLE.get(role, role)}: {text}" for role, text in self.turns())

    def _add_turn(self, turn_id: str, role: str) -> TurnBubble:
        self._placeholder.hide()
        bubble = TurnBubble(role, datetime.now(), self._container)
        # Insert above the trailing stretch so turns stack from the top.
        self._layout.insertWidget(self._layout.count() - 1, bubble)
        self._turns[turn_id] = bubble
        while len(self._turns) > MAX_TURNS:
            oldest = self._turns.pop(next(iter(self._turns)))
            self._layout.removeWidget(oldest)
            # Unparented, the widget dies with its last Python reference, here and now:
            # deleteLater would wait for an event-loop pass that a busy call may not give.
            oldest.setParent(None)
        return bubble

    def _at_bottom(self) -> bool:
        bar = self.verticalScrollBar()
        return bar.value() >= bar.maximum() - 24

    def _scroll_to_bottom(self) -> None:
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _bubble_at(self, pos: QPoint) -> TurnBubble | None:
        widget = self.childAt(pos)
        while widget is not None and not isinstance(widget, TurnBubble):
            widget = widget.parentWidget()
        return widget

    def _context_menu(self, pos: QPoint) -> None:
        menu = QMenu(self)
        bubble = self._bubble_at(pos)
        if bubble is not None:
            menu.addAction("Copy this turn", lambda: QGuiApplication.clipboard().setText(bubble.text()))
        copy_all = menu.addAction("Copy conversation", lambda: QGuiApplication.clipboard().setText(self.as_text()))
        copy_all.setEnabled(bool(self._turns))
        menu.exec(self.mapToGlobal(pos))

"""The conversation as it streams in: one bubble per turn, keyed by turn id.

Deltas append to their turn; a final delta replaces the turn's text with the complete
transcript (deltas can be lost or arrive re-segmented, the final text is the truth).
The model's tool calls show between the turns as collapsed bubbles (name and status),
which open to show the arguments and the output.
"""

from __future__ import annotations

from datetime import datetime

from PySide6.QtCore import QPoint, Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFrame, QLabel, QMenu, QScrollArea, QToolButton, QVBoxLayout, QWidget

from core.call.events import ToolActivity, TranscriptDelta

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


class ToolBubble(QFrame):
    """One tool call: a one-line header (name and status) that opens to arguments and output."""

    def __init__(self, activity: ToolActivity, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("tool")
        self.name = activity.name
        self.arguments = activity.arguments
        self.output: str | None = None
        self.failed = False
        self.header = QToolButton()
        self.header.setObjectName("toolHeader")
        self.header.setCheckable(True)
        self.header.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.header.setArrowType(Qt.ArrowType.RightArrow)
        self.header.setAutoRaise(True)
        self.header.toggled.connect(self.set_expanded)
        self.details = QLabel("")
        self.details.setObjectName("toolDetails")
        self.details.setWordWrap(True)
        self.details.setTextFormat(Qt.TextFormat.PlainText)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 2, 10, 4)
        layout.setSpacing(2)
        layout.addWidget(self.header)
        layout.addWidget(self.details)
        self.update_from(activity)

    @property
    def status(self) -> str:
        if self.output is None:
            return "running…"
        return "failed" if self.failed else "done"

    def update_from(self, activity: ToolActivity) -> None:
        if activity.output is not None:
            self.output = activity.output
        self.failed = activity.failed
        self.header.setText(f"Tool {self.name}: {self.status}")
        self.details.setText(f"Arguments: {self.arguments or '{}'}\nOutput: {self.output if self.output is not None else '…'}")

    def set_expanded(self, open_: bool) -> None:
        self.header.setArrowType(Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow)
        self.details.setVisible(open_)

    def expanded(self) -> bool:
        return self.details.isVisibleTo(self)


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
        self._turns: dict[str, TurnBubble | ToolBubble] = {}
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._context_menu)

    def apply(self, delta: TranscriptDelta) -> None:
        bubble = self._turns.get(delta.turn_id)
        if not isinstance(bubble, TurnBubble):
            bubble = self._add_turn(delta.turn_id, delta.role)
        elif bubble.final and not delta.final:
            return  # a late delta must not undo the complete text
        follow = self._at_bottom()
        bubble.body.setText(delta.text if delta.final else bubble.text() + delta.text)
        bubble.final = bubble.final or delta.final
        if follow:
            # The layout grows on the next event-loop pass; scroll after it.
            QTimer.singleShot(0, self._scroll_to_bottom)

    def show_tool(self, activity: ToolActivity) -> None:
        """A tool call started (a new collapsed bubble) or finished (its bubble says how)."""
        key = f"tool-{activity.call_id}"
        bubble = self._turns.get(key)
        if isinstance(bubble, ToolBubble):
            bubble.update_from(activity)
            return
        follow = self._at_bottom()
        self._insert(key, ToolBubble(activity, self._container))
        if follow:
            QTimer.singleShot(0, self._scroll_to_bottom)

    def tools(self) -> list[ToolBubble]:
        return [bubble for bubble in self._turns.values() if isinstance(bubble, ToolBubble)]

    def turns(self) -> list[tuple[str, str]]:
        """(role, text) of every turn, oldest first."""
        return [(bubble.role, bubble.text()) for bubble in self._turns.values() if isinstance(bubble, TurnBubble)]

    def clear(self) -> None:
        for bubble in self._turns.values():
            bubble.deleteLater()
        self._turns.clear()
        self._placeholder.show()

    def as_text(self) -> str:
        return "\n\n".join(f"{_ROLE_TITLE.get(role, role)}: {text}" for role, text in self.turns())

    def _add_turn(self, turn_id: str, role: str) -> TurnBubble:
        bubble = TurnBubble(role, datetime.now(), self._container)
        self._insert(turn_id, bubble)
        return bubble

    def _insert(self, key: str, bubble: TurnBubble | ToolBubble) -> None:
        self._placeholder.hide()
        # Insert above the trailing stretch so turns stack from the top.
        self._layout.insertWidget(self._layout.count() - 1, bubble)
        self._turns[key] = bubble
        while len(self._turns) > MAX_TURNS:
            oldest = self._turns.pop(next(iter(self._turns)))
            self._layout.removeWidget(oldest)
            # Unparented, the widget dies with its last Python reference, here and now:
            # deleteLater would wait for an event-loop pass that a busy call may not give.
            oldest.setParent(None)

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

"""Conversations you can come back to: the list of past calls, from their transcript files.

Each row is one transcript (core/transcripts.py): when it started, the first thing the
user said, how many turns. "Open" shows its turns in the window; "Continue" also starts
a call re-seeded from it (within the history budget, core/history.py); "Delete" removes
its file after a confirmation. The dialog only reads and deletes files: what opening
and continuing do is the window's business (the `opened` and `continued` signals).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from base import paths
from core.transcripts import TranscriptSummary, delete_transcript, list_conversations, read_transcript, seed_messages

if TYPE_CHECKING:
    from gui.main_window import MainWindow

log = logging.getLogger(__name__)

_COLUMNS = ("Date", "You said first", "Turns")
_FIRST_LINE_CHARS = 80


def _first_line(summary: TranscriptSummary) -> str:
    text = summary.first_user_line or "(nothing said)"
    return text if len(text) <= _FIRST_LINE_CHARS else text[: _FIRST_LINE_CHARS - 1] + "…"


class ConversationsDialog(QDialog):
    opened = Signal(list)  # the messages of a conversation to show
    continued = Signal(list)  # the messages a new call is seeded from

    def __init__(self, summaries: list[TranscriptSummary], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Conversations")
        self.setObjectName("conversationsDialog")
        self.setMinimumSize(620, 360)
        self.summaries = list(summaries)
        self.confirm_box: QMessageBox | None = None  # the open delete confirmation, if any

        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(_COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.empty = QLabel("No saved conversations yet. Each call's transcript appears here.")
        self.empty.setWordWrap(True)
        self.error = QLabel()
        self.error.setObjectName("error")
        self.error.setWordWrap(True)
        self.error.hide()

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.open_button = self._button(buttons, "&Open", self.open_selected)
        self.continue_button = self._button(buttons, "&Continue", self.continue_selected)
        self.delete_button = self._button(buttons, "&Delete…", self.delete_selected)
        buttons.rejected.connect(self.reject)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda _item: self.open_selected())

        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.empty)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self._fill()

    @staticmethod
    def _button(box: QDialogButtonBox, text: str, slot: Any) -> QPushButton:
        button = box.addButton(text, QDialogButtonBox.ButtonRole.ActionRole)
        button.clicked.connect(slot)
        return button

    def _fill(self) -> None:
        self.table.setRowCount(len(self.summaries))
        for row, summary in enumerate(self.summaries):
            when = datetime.fromtimestamp(summary.started).strftime("%Y-%m-%d %H:%M")
            cells = (when, _first_line(summary), str(summary.turns))
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column == 2:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)
        self.table.setVisible(bool(self.summaries))
        self.empty.setVisible(not self.summaries)
        if self.summaries:
            self.table.selectRow(0)
        self._update_buttons()

    def selected(self) -> TranscriptSummary | None:
        rows = self.table.selectionModel().selectedRows()
        return self.summaries[rows[0].row()] if rows else None

    def _update_buttons(self) -> None:
        chosen = self.selected() is not None
        for button in (self.open_button, self.continue_button, self.delete_button):
            button.setEnabled(chosen)

    def _messages(self) -> list[dict[str, Any]] | None:
        summary = self.selected()
        if summary is None:
            return None
        try:
            return read_transcript(summary.path)
        except OSError as exc:
            self._fail(f"Could not read this conversation ({exc.strerror or exc}).")
            return None

    def open_selected(self) -> None:
        messages = self._messages()
        if messages is not None:
            self.opened.emit(messages)
            self.accept()

    def continue_selected(self) -> None:
        messages = self._messages()
        if messages is not None:
            self.opened.emit(messages)
            self.continued.emit(seed_messages(messages))
            self.accept()

    def delete_selected(self) -> None:
        """Ask first (open(), not exec(): a nested event loop would stall the call's tasks)."""
        summary = self.selected()
        if summary is None:
            return
        box = QMessageBox(QMessageBox.Icon.Question, "Delete conversation",
                          f"Delete the conversation of {datetime.fromtimestamp(summary.started):%Y-%m-%d %H:%M}"
                          f" ({summary.turns} turns)? Its transcript file is removed for good.",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.finished.connect(lambda answer: self._delete_if(answer, summary))
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.confirm_box = box
        box.open()

    def _delete_if(self, answer: int, summary: TranscriptSummary) -> None:
        self.confirm_box = None
        if answer != QMessageBox.StandardButton.Yes.value:
            return
        try:
            delete_transcript(summary.path)
        except OSError as exc:
            self._fail(f"Could not delete {summary.path.name} ({exc.strerror or exc}).")
            return
        self.summaries.remove(summary)
        self._fill()

    def _fail(self, message: str) -> None:
        log.warning("%s", message)
        self.error.setText(message)
        self.error.show()


async def show(window: MainWindow) -> ConversationsDialog:
    """The list, read off the window's thread (months of calls: ~0.3 s), opened on the window."""
    folder = paths.transcripts_dir()
    summaries = await asyncio.get_running_loop().run_in_executor(None, list_conversations, folder)
    dialog = ConversationsDialog(summaries, window)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.opened.connect(window.show_past_conversation)
    dialog.continued.connect(window.session.continue_conversation)
    # open(), not exec(): a nested event loop would stall asyncio tasks under qasync.
    dialog.open()
    return dialog

"""The main window: push-to-talk, status, conversation, latency plot, devices, menus.

It only wires widgets to the CallSession (actions) and the EngineBridge (events).
Heavy parts (the pyqtgraph plot, the device list) are installed after the first
paint by `finish_startup`, so the window appears quickly.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QByteArray, QEvent, QObject, Qt, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QSplitter,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from base import paths
from core.call.state import CallState, Phase
from core.call.events import TranscriptDelta, UsageUpdated
from gui import help_dialogs
from gui.call_session import CallSession, Engine
from gui.conversation_export import conversation, export
from gui.conversation_view import ConversationView
from gui.device_pickers import DevicePickers
from gui.level_meter import LevelMeter
from gui.problem_banner import ProblemBanner
from gui.push_to_talk import PushToTalkButton
from gui.status_line import StatusLine

if TYPE_CHECKING:
    from gui.global_hotkey import GlobalHotkey
    from gui.latency_plot import LatencyPlot
    from gui.tray import Tray

log = logging.getLogger(__name__)

LatencyStats = Callable[[], Mapping[str, Any]]
_EMPTY_STATS = {"count": 0, "avg": None, "p95": None, "p99": None}
_TEXT_INPUTS = (QLineEdit, QTextEdit, QPlainTextEdit, QAbstractSpinBox)


def _section(title: str, body: QWidget) -> QFrame:
    frame = QFrame()
    frame.setObjectName("card")
    layout = QVBoxLayout(frame)
    layout.setContentsMargins(12, 10, 12, 12)
    heading = QLabel(title)
    heading.setObjectName("cardTitle")
    layout.addWidget(heading)
    layout.addWidget(body, 1)
    return frame


class MainWindow(QMainWindow):
    close_requested = Signal()  # the app closes the call, then calls allow_close() and close()
    settings_requested = Signal()

    def __init__(self, session: CallSession, *, latency_stats: LatencyStats | None = None) -> None:
        super().__init__()
        self.session = session
        self._latency_stats_override = latency_stats
        self._may_close = False
        self._talking = False
        self._pending_latencies: list[float] = []
        self.latency_plot: LatencyPlot | None = None
        # Installed by gui/app.py when the app runs (not for screenshots).
        self.tray: Tray | None = None
        self.hotkey: GlobalHotkey | None = None
        self.setWindowTitle("Sandra")
        self.setMinimumSize(760, 480)

        self.status_line = StatusLine()
        self.banner = ProblemBanner()
        self.conversation = ConversationView()
        self.text_input = QLineEdit()
        self.text_input.setObjectName("textInput")
        self.text_input.setPlaceholderText("Type a message and press Enter")
        self.text_input.setClearButtonEnabled(True)
        self.ptt = PushToTalkButton()
        self.hands_free = QCheckBox("Hands-free (Sandra listens all the time)")
        self.hands_free.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.level = LevelMeter()
        self.devices = DevicePickers()
        self._latency_holder = QVBoxLayout()
        # Tokens and estimated cost of this call, under the plot (paid providers report usage).
        self.usage_line = QLabel("")
        self.usage_line.setObjectName("hint")
        self.usage_line.hide()
        self._latency_placeholder = QLabel("Loading the latency plot…")
        self._latency_placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._latency_holder.addWidget(self._latency_placeholder)
        self._build_layout()
        self._build_menus()
        self._wire()
        self.restore_geometry(session.settings.window_geometry)
        self.hands_free.setChecked(bool(session.settings.hands_free))
        QApplication.instance().installEventFilter(self)

    # ---- layout -------------------------------------------------------------------------
    def _build_layout(self) -> None:
        latency_body = QWidget()
        latency_column = QVBoxLayout(latency_body)
        latency_column.setContentsMargins(0, 0, 0, 0)
        latency_column.addLayout(self._latency_holder, 1)
        latency_column.addWidget(self.usage_line)
        self._latency_holder.setContentsMargins(0, 0, 0, 0)

        controls = QWidget()
        controls_layout = QVBoxLayout(controls)
        controls_layout.setContentsMargins(0, 0, 0, 0)
        controls_layout.addWidget(self.devices)
        level_row = QHBoxLayout()
        level_row.addWidget(QLabel("Input level"))
        level_row.addWidget(self.level, 1)
        controls_layout.addLayout(level_row)
        controls_layout.addSpacing(6)
        controls_layout.addWidget(self.ptt)
        controls_layout.addWidget(self.hands_free)

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(_section("Response latency", latency_body), 1)
        right_layout.addWidget(_section("Talk", controls))

        conversation = QWidget()
        conversation_layout = QVBoxLayout(conversation)
        conversation_layout.setContentsMargins(0, 0, 0, 0)
        conversation_layout.addWidget(self.conversation, 1)
        conversation_layout.addWidget(self.text_input)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(_section("Conversation", conversation))
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 5)
        splitter.setStretchFactor(1, 6)
        splitter.setChildrenCollapsible(False)

        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(10, 6, 10, 10)
        layout.setSpacing(6)
        layout.addWidget(self.status_line)
        layout.addWidget(self.banner)
        layout.addWidget(splitter, 1)
        self.setCentralWidget(central)

    def _action(self, text: str, slot: Callable[[], None], shortcut: str | QKeySequence | None = None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self.export_action = self._action("&Export conversation…", self.export_conversation, "Ctrl+E")
        file_menu.addAction(self._action("&Conversations…", self.open_conversations, "Ctrl+O"))
        file_menu.addAction(self.export_action)
        file_menu.addAction(self._action("Open &log folder", self.open_log_folder))
        file_menu.addAction(self._action("&Settings…", self.settings_requested.emit, "Ctrl+,"))
        file_menu.addSeparator()
        file_menu.addAction(self._action("&Quit", self.close, QKeySequence.StandardKey.Quit))
        # Ctrl+Q on every platform, not only where it is the standard Quit key.
        file_menu.actions()[-1].setShortcuts([QKeySequence("Ctrl+Q")])

        call_menu = bar.addMenu("&Call")
        self.connect_action = self._action("&Connect", self.session.connect_call, "Ctrl+K")
        self.hang_up_action = self._action("&Hang up", self.session.hang_up, "Ctrl+Shift+H")
        self.hands_free_action = QAction("Hands-&free", self)
        self.hands_free_action.setShortcut(QKeySequence("Ctrl+Shift+F"))
        self.hands_free_action.setCheckable(True)
        self.hang_up_action.setEnabled(False)
        for action in (self.connect_action, self.hang_up_action, self.hands_free_action):
            call_menu.addAction(action)

        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self._action("&Keyboard shortcuts", lambda: help_dialogs.show_shortcuts(self), "F1"))
        help_menu.addAction(self._action("&About Sandra", lambda: help_dialogs.show_about(self)))

    def _wire(self) -> None:
        bridge = self.session.bridge
        bridge.state_changed.connect(self.on_state)
        bridge.transcript.connect(self.on_transcript)
        bridge.latency.connect(self.on_latency)
        bridge.input_level.connect(self.level.set_level)
        bridge.assistant_speaking.connect(self.ptt.set_assistant_speaking)
        bridge.problem.connect(self.banner.show_problem)
        bridge.hint.connect(self.banner.show_hint)
        bridge.usage.connect(self.show_usage)
        bridge.recovered.connect(self.banner.show_recovered)
        bridge.mode_changed.connect(self.show_mode)
        bridge.tool_activity.connect(self.conversation.show_tool)
        self.text_input.returnPressed.connect(self.send_typed)
        self.session.engine_ready.connect(self._on_engine)
        self.ptt.pressed.connect(self.press)
        self.ptt.released.connect(self.release)
        self.hands_free.toggled.connect(self._set_hands_free)
        self.hands_free_action.toggled.connect(self.hands_free.setChecked)
        self.status_line.reconnect_requested.connect(self.session.connect_call)
        self.devices.changed.connect(self.session.set_devices)
        if self.session.engine is not None:
            self._on_engine(self.session.engine)

    # ---- push-to-talk ---------------------------------------------------------------------
    def press(self) -> None:
        if self._talking:
            return
        self._talking = True
        self.ptt.set_talking(True)
        self.session.press()

    def release(self) -> None:
        if not self._talking:
            return
        self._talking = False
        self.ptt.set_talking(False)
        self.session.release()

    def send_typed(self) -> None:
        """Enter in the text box: the typed turn goes out (and shows when the engine echoes it)."""
        if self.session.send_text(self.text_input.text()):
            self.text_input.clear()
        elif self.text_input.text().strip():
            self.banner.show_hint("Connect the call first; your message is kept in the box.")

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        """Space anywhere in this window is push-to-talk, unless a text field has focus."""
        if event.type() in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease) and isinstance(watched, QWidget):
            key_event: QKeyEvent = event  # type: ignore[assignment]
            if key_event.key() == Qt.Key.Key_Space and watched.window() is self and not self._editing_text():
                # Every press and release goes to the turn table, isAutoRepeat() or not: on X11 Qt
                # flags autorepeat wrongly both ways (unflagged repeat pairs; a first press after a
                # click flagged as a repeat). The table makes one physical hold one turn.
                self.press() if event.type() == QEvent.Type.KeyPress else self.release()
                return True
        return super().eventFilter(watched, event)

    def _editing_text(self) -> bool:
        focus = QApplication.focusWidget()
        if focus is None or focus.window() is not self:
            return False
        # An editable combo box keeps the focus itself and hands keys to its line edit.
        return isinstance(focus, _TEXT_INPUTS) or (isinstance(focus, QComboBox) and focus.isEditable())

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        # A key released in another window never reaches us: end the turn when focus leaves.
        if event.type() == QEvent.Type.ActivationChange and not self.isActiveWindow():
            self.release()
        super().changeEvent(event)

    # ---- engine events ----------------------------------------------------------------------
    def _on_engine(self, engine: Engine) -> None:
        self.status_line.set_provider(engine.provider_label, engine.model)
        self.hands_free_action.setChecked(self.hands_free.isChecked())

    def on_state(self, state: CallState) -> None:
        self.status_line.set_state(state)
        self.connect_action.setEnabled(not state.active)
        self.hang_up_action.setEnabled(state.active)
        if state.phase is Phase.CONNECTED:
            self.banner.hide()  # an earlier problem is over once the call is back

    def on_transcript(self, delta: TranscriptDelta) -> None:
        self.conversation.apply(delta)

    def on_latency(self, name: str, ms: float) -> None:
        if name != "response_latency":
            return
        if self.latency_plot is None:
            self._pending_latencies.append(ms)
        else:
            self.latency_plot.add(ms)

    def latency_stats(self) -> Mapping[str, Any]:
        if self._latency_stats_override is not None:
            return self._latency_stats_override()
        engine = self.session.engine
        telemetry = getattr(engine, "telemetry", None)
        return telemetry.stats("response_latency") if telemetry is not None else _EMPTY_STATS

    def install_latency_plot(self) -> None:
        """Build the pyqtgraph plot (slow import) and replay latencies that came before it."""
        if self.latency_plot is not None:
            return
        from gui.latency_plot import LatencyPlot

        self.latency_plot = LatencyPlot(self.latency_stats)
        self._latency_holder.removeWidget(self._latency_placeholder)
        self._latency_placeholder.deleteLater()
        self._latency_holder.addWidget(self.latency_plot)
        for ms in self._pending_latencies:
            self.latency_plot.add(ms)
        self._pending_latencies.clear()
        self.latency_plot.refresh_stats()

    def _set_hands_free(self, on: bool) -> None:
        self.hands_free_action.setChecked(on)
        self.ptt.set_hands_free(on)
        self.session.set_hands_free(on)

    def show_usage(self, usage: UsageUpdated) -> None:
        tokens = usage.tokens
        text = (f"This call: {tokens.get('input_tokens', 0):,} tokens in "
                f"({tokens.get('input_audio_tokens', 0):,} audio, {tokens.get('cached_tokens', 0):,} cached), "
                f"{tokens.get('output_tokens', 0):,} out ({tokens.get('output_audio_tokens', 0):,} audio)")
        if usage.cost_usd is not None:
            text += f" · about ${usage.cost_usd:.4f}"
        self.usage_line.setText(text)
        self.usage_line.show()

    def show_mode(self, hands_free: bool) -> None:
        """The server says which mode it is in: show that, without asking for it again."""
        self.hands_free.blockSignals(True)
        self.hands_free.setChecked(hands_free)
        self.hands_free.blockSignals(False)
        self.hands_free_action.setChecked(hands_free)
        self.ptt.set_hands_free(hands_free)

    # ---- file actions -------------------------------------------------------------------------
    def export_conversation(self) -> None:
        messages = conversation(self.session.engine)
        if not messages:
            QMessageBox.information(self, "Export conversation", "There is no conversation to export yet.")
            return
        name, _ = QFileDialog.getSaveFileName(
            self, "Export conversation", str(Path.home() / "sandra-conversation.md"),
            "Markdown (*.md);;JSON (*.json)",
        )
        if not name:
            return
        try:
            export(messages, Path(name))
        except OSError as exc:
            self.banner.show_problem(f"Could not export the conversation: {exc.strerror or exc}", False)

    def open_conversations(self) -> None:
        from gui import conversations

        self.session.spawn(conversations.show(self), "list the past conversations")

    def show_past_conversation(self, messages: list[dict[str, Any]]) -> None:
        """A reopened conversation's turns, in place of what the view showed."""
        self.conversation.clear()
        for number, message in enumerate(messages):
            role = message.get("role")
            if role in ("user", "assistant"):
                self.conversation.apply(TranscriptDelta(role, message["content"], True, f"past-{number}"))

    def open_log_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(paths.log_dir())))

    # ---- geometry and closing -----------------------------------------------------------------
    def restore_geometry(self, encoded: str | None) -> None:
        if encoded:
            try:
                if self.restoreGeometry(QByteArray(base64.b64decode(encoded))):
                    return
            except ValueError:
                log.warning("ignoring a damaged saved window geometry")
        self.resize(1100, 720)

    def encoded_geometry(self) -> str:
        return base64.b64encode(bytes(self.saveGeometry().data())).decode("ascii")

    def allow_close(self) -> None:
        self._may_close = True

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        if self._may_close:
            QApplication.instance().removeEventFilter(self)
            event.accept()
            return
        # Hanging up is async: let the app do it, then close for real.
        event.ignore()
        self.close_requested.emit()

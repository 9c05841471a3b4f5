"""The tray icon: the call's state at a glance, and the few controls needed without the window.

The icon is a dot coloured by the call's phase (its tooltip says the state in words).
Its menu: Push to talk (a menu cannot be held, so it toggles: click to talk, click
again to send), Hands-free, Hang up, Show, Quit. With the `close_to_tray` setting the
window's close button hides the window to the tray instead of ending Sandra, and says
so the first time. Where the desktop has no tray, `Tray.install` returns None and the
window closes as it always did; everything stays reachable from the window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QAction, QColor, QIcon, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from core.call.state import CallState, Phase

if TYPE_CHECKING:
    from gui.main_window import MainWindow

log = logging.getLogger(__name__)

PHASE_COLOURS: dict[Phase, str] = {
    Phase.IDLE: "#9e9e9e",  # grey: no call
    Phase.CONNECTING: "#f2b705",  # amber
    Phase.CONNECTED: "#2e9d4f",  # green
    Phase.RECONNECTING: "#f57c00",  # orange
    Phase.ENDED: "#c62828",  # red
}
HIDDEN_MESSAGE = "Sandra is still running here. Use Quit in this menu to end it."
_ICON_SIZE = 64


def phase_icon(phase: Phase) -> QIcon:
    """A filled dot in the phase's colour, with a light rim so it shows on dark and light panels."""
    pixmap = QPixmap(_ICON_SIZE, _ICON_SIZE)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(QPen(QColor("#ffffff"), 4))
    painter.setBrush(QColor(PHASE_COLOURS[phase]))
    painter.drawEllipse(4, 4, _ICON_SIZE - 8, _ICON_SIZE - 8)
    painter.end()
    return QIcon(pixmap)


class Tray(QObject):
    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.phase = Phase.IDLE
        self.hid_once = False  # the "still running" message is said once
        self.icon = QSystemTrayIcon(phase_icon(Phase.IDLE), self)
        self.icon.setToolTip("Sandra: not connected")
        self.menu = QMenu()
        self.talk_action = self._add("Push to talk (click again to send)", self._talk, checkable=True)
        self.hands_free_action = self._add("Hands-free", self._hands_free, checkable=True)
        self.hang_up_action = self._add("Hang up", window.session.hang_up)
        self.menu.addSeparator()
        self.show_action = self._add("Show Sandra", self.show_window)
        self.quit_action = self._add("Quit", window.close)
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._activated)

        bridge = window.session.bridge
        bridge.state_changed.connect(self.on_state)
        bridge.mode_changed.connect(self.hands_free_action.setChecked)
        window.hands_free.toggled.connect(self.hands_free_action.setChecked)
        self.hands_free_action.setChecked(window.hands_free.isChecked())
        self.on_state(CallState(Phase.IDLE))
        window.installEventFilter(self)

    @classmethod
    def install(cls, window: MainWindow) -> Tray | None:
        """The tray icon, shown; None where the desktop has no system tray."""
        if not QSystemTrayIcon.isSystemTrayAvailable():
            log.info("no system tray on this desktop: Sandra runs from its window alone")
            return None
        tray = cls(window)
        tray.icon.show()
        return tray

    def _add(self, text: str, slot: Callable[..., object], *, checkable: bool = False) -> QAction:
        action = QAction(text, self.menu)
        action.setCheckable(checkable)
        action.triggered.connect(slot)  # the user's trigger only, not setChecked from the window
        self.menu.addAction(action)
        return action

    def on_state(self, state: CallState) -> None:
        self.phase = state.phase
        self.icon.setIcon(phase_icon(state.phase))
        self.icon.setToolTip(f"Sandra: {state.describe()}")
        self.hang_up_action.setEnabled(state.active)
        self.talk_action.setEnabled(state.phase is Phase.CONNECTED)
        if state.phase is not Phase.CONNECTED and self.talk_action.isChecked():
            self.talk_action.setChecked(False)  # the call is gone: so is the turn
            self.window.release()

    def _talk(self, on: bool) -> None:
        self.window.press() if on else self.window.release()

    def _hands_free(self, on: bool) -> None:
        self.window.hands_free.setChecked(on)  # the window's switch tells the session

    def show_window(self) -> None:
        self.window.showNormal()
        self.window.raise_()
        self.window.activateWindow()

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason is QSystemTrayIcon.ActivationReason.Trigger:  # a plain click: show or hide
            self.window.hide() if self.window.isVisible() else self.show_window()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        """The close button (a spontaneous close) hides to the tray when the setting says so.
        Quit and a signal close the window programmatically, which still ends Sandra."""
        if (watched is self.window and event.type() == QEvent.Type.Close and event.spontaneous()
                and self.window.session.settings.close_to_tray and QSystemTrayIcon.isSystemTrayAvailable()):
            event.ignore()
            self.window.hide()
            if not self.hid_once:
                self.hid_once = True
                self.icon.showMessage("Sandra", HIDDEN_MESSAGE, phase_icon(self.phase), 5000)
            return True
        return super().eventFilter(watched, event)

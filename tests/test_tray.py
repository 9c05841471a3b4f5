"""The tray icon: embedded in a real X11 tray, its menu drives the call, the close button hides to it.

The X tests run the window in a child process on a private Xvfb (the suite's Qt is
offscreen), with a tray host that owns the system-tray selection in this process;
the child reports what it saw as JSON. The menu and state wiring is also checked
offscreen, in-process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as the X child: python tests/test_tray.py
    sys.path.insert(0, str(ROOT))

from PySide6.QtGui import QColor  # noqa: E402
from PySide6.QtWidgets import QSystemTrayIcon  # noqa: E402

from core.call.events import EngineEvent, StateChanged  # noqa: E402
from core.call.state import CallState, Phase  # noqa: E402
from core.config import Secrets, Settings  # noqa: E402
from gui.app import application, install_desktop  # noqa: E402
from gui.call_session import CallSession  # noqa: E402
from gui.engine_bridge import EngineBridge  # noqa: E402
from gui.main_window import MainWindow  # noqa: E402
from gui.settings_dialog import SettingsDialog  # noqa: E402
from gui.tray import HIDDEN_MESSAGE, PHASE_COLOURS, Tray, phase_icon  # noqa: E402
from test_gui_window import RecordingEngine as WindowEngine  # noqa: E402


class RecordingEngine(WindowEngine):
    """The window tests' recording engine, with what the tray's actions also ask of it."""

    def emit(self, event: EngineEvent) -> None:
        for observer in self.observers:
            observer(event)

    async def hang_up(self) -> None:
        self.calls.append("hang_up")

    async def set_hands_free(self, on: bool) -> None:
        self.calls.append(f"hands_free={on}")

    async def close(self) -> None:
        self.calls.append("close")


def make_window(settings: Settings, engine: RecordingEngine) -> MainWindow:
    session = CallSession(settings, EngineBridge(), engine=engine, read=lambda _provider: Secrets(),
                          write=lambda _change: None)
    window = MainWindow(session)
    session.bridge.setParent(window)
    session.setParent(window)
    return window


def centre_colour(phase: Phase) -> str:
    image = phase_icon(phase).pixmap(64, 64).toImage()
    return image.pixelColor(32, 32).name()


def test_each_phase_has_its_own_colour(qtbot) -> None:
    application()
    colours = {phase: centre_colour(phase) for phase in Phase}
    assert colours == {phase: QColor(code).name() for phase, code in PHASE_COLOURS.items()}
    assert len(set(colours.values())) == len(Phase)


@pytest.fixture
def connected(qtbot) -> tuple[MainWindow, RecordingEngine, Tray]:
    """A window in a call, with its tray built (offscreen has no tray to show it in)."""
    application()
    engine = RecordingEngine()
    window = make_window(Settings(), engine)
    qtbot.addWidget(window)
    tray = Tray(window)
    engine.emit(StateChanged(CallState(Phase.CONNECTED)))
    return window, engine, tray


async def test_menu_actions_do_what_they_say(connected) -> None:
    window, engine, tray = connected
    assert tray.phase is Phase.CONNECTED and tray.icon.toolTip() == "Sandra: Connected"
    assert tray.talk_action.isEnabled() and tray.hang_up_action.isEnabled()

    tray.talk_action.trigger()
    assert engine.calls == ["press"] and "release to send" in window.ptt.text()
    tray.talk_action.trigger()
    assert engine.calls == ["press", "release"]

    tray.hands_free_action.trigger()
    assert window.hands_free.isChecked()
    await asyncio.sleep(0.05)
    assert "hands_free=True" in engine.calls and window.session.settings.hands_free
    window.hands_free.setChecked(False)  # the window's own switch shows in the menu
    assert not tray.hands_free_action.isChecked()
    window.session.bridge.mode_changed.emit(True)  # the server says it is hands-free
    assert tray.hands_free_action.isChecked()

    tray.hang_up_action.trigger()
    await asyncio.sleep(0.05)
    assert "hang_up" in engine.calls

    window.hide()
    tray.show_action.trigger()
    assert window.isVisible()

    closing: list[bool] = []
    window.close_requested.connect(lambda: closing.append(True))
    tray.quit_action.trigger()
    assert closing == [True]
    window.allow_close()
    window.close()


async def test_a_call_that_drops_ends_the_menu_turn(connected) -> None:
    _window, engine, tray = connected
    tray.talk_action.trigger()
    engine.emit(StateChanged(CallState(Phase.RECONNECTING, attempt=1, max_attempts=5, delay=1.0)))
    assert engine.calls == ["press", "release"]
    assert not tray.talk_action.isChecked() and not tray.talk_action.isEnabled()
    assert centre_colour(Phase.RECONNECTING) == tray.icon.icon().pixmap(64, 64).toImage().pixelColor(32, 32).name()


def test_without_a_tray_nothing_is_installed_and_close_closes(qtbot) -> None:
    application()
    assert not QSystemTrayIcon.isSystemTrayAvailable()  # offscreen has none
    window = make_window(Settings(close_to_tray=True), RecordingEngine())
    qtbot.addWidget(window)
    window.show()
    assert Tray.install(window) is None
    settings = SettingsDialog(Settings())  # and the setting says why it cannot be used
    qtbot.addWidget(settings)
    assert not settings.close_to_tray.isEnabled() and "no tray" in settings.close_to_tray.text()
    closing: list[bool] = []
    window.close_requested.connect(lambda: closing.append(True))
    window.close()
    assert closing == [True]
    window.allow_close()
    window.close()


# --- on a real X server ----------------------------------------------------------------


def run_child(display_name: str, close_to_tray: bool) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "DBUS_SESSION_BUS_ADDRESS"}
    # No session bus: Qt uses the X11 (XEmbed) tray, the one the tray host speaks.
    env.update(DISPLAY=display_name, QT_QPA_PLATFORM="xcb", HOME=env.get("HOME", "/tmp"))
    result = subprocess.run([sys.executable, __file__, json.dumps({"close_to_tray": close_to_tray})],
                            env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_icon_docks_in_a_real_tray_and_close_hides_to_it(private_home) -> None:
    from _x11 import TrayHost, x_server

    with x_server() as display_name:
        host = TrayHost(display_name)
        try:
            seen = run_child(display_name, close_to_tray=True)
            assert seen["available"] is True
            assert seen["global_key"] is True
            assert host.docked, "the tray host got no dock request"
            assert seen["tray_window"] in host.docked
            assert seen["embedded_in"] == host.window.id  # reparented into the tray: embedded
            assert seen["actions"] == ["press", "release", "hands_free=True", "hang_up"]
            assert seen["after_close"] == {"visible": False, "close_requested": False}
            assert seen["messages"] == [HIDDEN_MESSAGE]  # said once, though closed twice
            assert seen["after_show"] is True
            assert seen["quit_closes"] is True
        finally:
            host.close()


def test_no_tray_host_means_no_icon_and_a_normal_close(private_home) -> None:
    from _x11 import x_server

    with x_server() as display_name:
        seen = run_child(display_name, close_to_tray=True)
    assert seen["available"] is False
    assert seen["after_close"] == {"visible": True, "close_requested": True}


def _child(options: dict) -> dict:
    """In the child, on Xvfb: install the tray, press every menu item, close the window twice."""
    import qasync
    from PySide6.QtWidgets import QApplication
    from Xlib import X, display
    from Xlib.protocol import event

    app = application()
    seen: dict = {}

    async def main() -> None:
        engine = RecordingEngine()
        window = make_window(Settings(close_to_tray=options["close_to_tray"]), engine)
        window.show()
        requested: list[bool] = []
        window.close_requested.connect(lambda: requested.append(True))
        await _until(lambda: window.isVisible() and window.winId() != 0)
        # The tray host announced itself just now: give Qt's tray tracker a moment to see it.
        await _until(QSystemTrayIcon.isSystemTrayAvailable, timeout=3.0, required=False)
        install_desktop(window)  # as the app does after the first paint: tray and global key
        tray = window.tray
        seen["available"] = tray is not None
        seen["global_key"] = window.hotkey is not None and window.hotkey.active
        x = display.Display()
        if tray is not None:
            messages: list[str] = []
            tray.icon.showMessage = lambda _title, text, *_rest: messages.append(text)  # type: ignore[method-assign]
            tray_window = await _tray_window(x, window)
            seen["tray_window"] = tray_window
            embedded = x.create_resource_object("window", tray_window)
            await _until(lambda: embedded.query_tree().parent.id != x.screen().root.id, timeout=5)
            seen["embedded_in"] = embedded.query_tree().parent.id
            engine.emit(StateChanged(CallState(Phase.CONNECTED)))
            tray.talk_action.trigger()
            tray.talk_action.trigger()
            tray.hands_free_action.trigger()
            tray.hang_up_action.trigger()
            await asyncio.sleep(0.2)
            seen["actions"] = [call for call in engine.calls if call != "close"]
        _close_from_wm(x, window, event, X)
        await asyncio.sleep(0.5)
        seen["after_close"] = {"visible": window.isVisible(), "close_requested": bool(requested)}
        if tray is not None:
            tray.show_action.trigger()
            await _until(window.isVisible)
            _close_from_wm(x, window, event, X)  # a second time: hidden again, said no more
            await asyncio.sleep(0.5)
            seen["messages"] = messages
            tray.show_action.trigger()
            await _until(window.isVisible)
            seen["after_show"] = window.isVisible()
            tray.quit_action.trigger()
            seen["quit_closes"] = bool(requested)
        x.close()
        window.hotkey.close()
        window.allow_close()
        window.close()
        QApplication.processEvents()

    with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
        runner.run(main())
    return seen


async def _tray_window(x, window: MainWindow) -> int:
    """The X window Qt made for the icon: the one with _XEMBED_INFO, not the main window."""
    info = x.intern_atom("_XEMBED_INFO")
    found: list[int] = []

    def search() -> bool:
        stack = [x.screen().root]
        while stack:
            node = stack.pop()
            tree = node.query_tree()
            for child in tree.children:
                if child.get_full_property(info, 0) is not None and child.id != int(window.winId()):
                    found.append(child.id)
                    return True
                stack.append(child)
        return False

    await _until(search, timeout=5)
    return found[0]


def _close_from_wm(x, window: MainWindow, event, X) -> None:
    """What a window manager's close button sends: WM_DELETE_WINDOW (a spontaneous close)."""
    target = x.create_resource_object("window", int(window.winId()))
    protocols = x.intern_atom("WM_PROTOCOLS")
    message = event.ClientMessage(window=target, client_type=protocols,
                                  data=(32, [x.intern_atom("WM_DELETE_WINDOW"), X.CurrentTime, 0, 0, 0]))
    target.send_event(message)
    x.flush()


async def _until(condition: Callable[[], bool], timeout: float = 5.0, required: bool = True) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            if required:
                raise TimeoutError("condition not met")
            return
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))

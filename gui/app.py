"""Application start: the window with its call (`run`) and offscreen screenshots.

One thread runs Qt and asyncio together (gui/event_loop.py, on qasync). The window shows first;
the latency plot, the device list and the engine (aiortc) load after the first
paint, so the window appears quickly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import webbrowser
from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QWidget

from base import paths
import dataclasses

from base.errors import ConfigError
from core import config
from core.config import Settings, SettingsChange, load_settings
from gui import crash_guard
from core.tools.builtin import Timers, builtin_tools
from core.tools.registry import ToolRegistry
from gui.call_session import CallSession, CallTools, Engine
from gui.engine_bridge import EngineBridge
from gui.main_window import LatencyStats, MainWindow
from gui.notifier import Notifier
from gui.tool_prompt import ToolPrompter

log = logging.getLogger(__name__)

# Set by bench/startup.py: print when the window first paints, then close at once.
PROBE_ENV = "SANDRA_EXIT_AFTER_FIRST_PAINT"
FIRST_PAINT_MARK = "sandra: first paint"
DEFAULT_SIZE = (1100, 720)
# Ctrl+C in the terminal and a session manager's SIGTERM close the window like Quit does.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def application(argv: list[str] | None = None) -> QApplication:
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(argv or [sys.argv[0]])
    app.setApplicationName("sandra")
    app.setApplicationDisplayName("Sandra")
    app.setOrganizationName("sandra")
    app.setDesktopFileName("sandra")
    app.setWindowIcon(QIcon(str(paths.resource("sandra.png"))))
    try:
        app.setStyleSheet(paths.resource("style.qss").read_text(encoding="utf-8"))
    except OSError as exc:  # unstyled is ugly, not broken
        log.warning("style sheet not loaded: %s", exc)
    # The window closes only after the call is hung up; Qt must not quit before that.
    app.setQuitOnLastWindowClosed(False)
    return app


def build_window(
    settings: Settings, *, engine: Engine | None = None, latency_stats: LatencyStats | None = None
) -> MainWindow:
    bridge = EngineBridge()
    session = CallSession(settings, bridge, engine=engine)
    window = MainWindow(session, latency_stats=latency_stats)
    bridge.setParent(window)
    session.setParent(window)
    if settings.load_warnings:  # e.g. a corrupt settings file was set aside: say so, don't crash
        window.banner.show_problem(" ".join(settings.load_warnings), False)
    window.settings_requested.connect(lambda: session.spawn(open_settings(window), "open the settings"))
    session.key_needed.connect(lambda provider: session.spawn(ask_for_key(window, provider), "ask for the API key"))
    install_tools(window)
    return window


def install_tools(window: MainWindow, opener: Callable[[str], bool] = webbrowser.open) -> Notifier:
    """The built-in tools for the window's calls: timers ring through the notifier, tools that
    change something ask in the window first; MCP servers join the same registry per call.
    `opener` is the web browser (a test passes a recorder)."""
    session = window.session
    notifier = Notifier(lambda: session.settings.output_device, lambda title, text: _show_elsewhere(window, title, text))
    registry = ToolRegistry()
    registry.add(builtin_tools(Timers(on_ring=notifier.on_ring), opener))
    session.tools = CallTools(registry, ToolPrompter(window, session.remember_approval).approve)
    return notifier


def _show_elsewhere(window: MainWindow, title: str, text: str) -> None:
    """No desktop notification service: the tray's balloon, or the banner without a tray."""
    if window.tray is not None:
        window.tray.icon.showMessage(title, text)
    else:
        window.banner.show_hint(f"{title}: {text}")


class _FirstPaint(QObject):
    """Calls back once, on the first paint event a widget gets."""

    def __init__(self, widget: QWidget, callback: Callable[[], None]) -> None:
        super().__init__(widget)
        self._callback: Callable[[], None] | None = callback
        widget.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.Paint and self._callback is not None:
            callback, self._callback = self._callback, None
            watched.removeEventFilter(self)
            # After this paint has finished, not inside it.
            asyncio.get_running_loop().call_soon(callback)
        return False


async def _list_devices(window: MainWindow) -> None:
    from core.audio import list_devices

    devices = await asyncio.get_running_loop().run_in_executor(None, list_devices)
    settings = window.session.settings
    window.devices.populate(devices, settings.input_device, settings.output_device)


async def run_window(window: MainWindow, *, connect: bool = True, probe: bool = False, desktop: bool = False) -> int:
    """Show the window, finish loading after the first paint, and live until it closes.
    `desktop`: also the tray icon and the global push-to-talk key (the app, not tests)."""
    loop = asyncio.get_running_loop()
    painted: asyncio.Future[None] = loop.create_future()
    closed: asyncio.Future[None] = loop.create_future()
    _FirstPaint(window, lambda: painted.done() or painted.set_result(None))
    window.close_requested.connect(lambda: closed.done() or closed.set_result(None))
    window.show()
    await painted
    if probe:
        print(FIRST_PAINT_MARK, flush=True)
        window.close()
    else:
        window.install_latency_plot()
        if desktop:
            install_desktop(window)
        window.session.spawn(_list_devices(window), "list the sound devices")
        if connect:
            window.session.connect_call()
    await closed
    await shutdown(window)
    return 0


async def shutdown(window: MainWindow) -> None:
    """Hang up, stop the engine and its server, remember the window, then close it."""
    settings = dataclasses.replace(window.session.settings, window_geometry=window.encoded_geometry())
    if window.hotkey is not None:
        window.hotkey.close()
    await window.session.close()
    try:
        await asyncio.get_running_loop().run_in_executor(None, config.save_settings, settings)
    except (OSError, ConfigError) as exc:
        log.warning("settings not saved: %s", exc)
    window.allow_close()
    window.close()


def run(argv: list[str]) -> int:
    """The desktop app. Returns the process exit code."""
    from gui import event_loop

    application(argv)
    window = build_window(load_settings())
    probe = os.environ.get(PROBE_ENV) == "1"
    try:
        return int(event_loop.run(_run_closing_on_signals(window, probe=probe)))
    except RuntimeError as exc:
        # Qt ended its loop under us: the display went away (X server gone, session
        # ended). Nothing bound to the closed loop can be closed politely any more, and
        # the garbage collector would only print tracebacks trying: stop the embedded
        # server and leave at once (transcripts are flushed message by message).
        log.warning("the window's event loop stopped early: %s", exc)
        print("sandra: the display went away, so the window closed.", file=sys.stderr, flush=True)
        from core.local_server import terminate_all

        terminate_all()
        logging.shutdown()
        os._exit(1)


async def _run_closing_on_signals(window: MainWindow, *, probe: bool) -> int:
    """run_window, with SIGINT/SIGTERM closing the window (hang up, stop the server) first.

    Python's own handlers would only run when Qt happens to call back into Python, and
    SIGTERM's default kills the process with the call and the local server still up. The
    loop's handlers wake Qt through a self-pipe and run on the loop, between callbacks.
    """
    loop = asyncio.get_running_loop()
    crash_guard.install(lambda message: window.banner.show_problem(message, False), loop)
    installed = []
    for signum in STOP_SIGNALS:
        try:
            loop.add_signal_handler(signum, _close_on_signal, window, signum)
        except (NotImplementedError, RuntimeError):  # Windows' loops have no signal handlers
            log.debug("cannot close the window on signal %s here", signum)
        else:
            installed.append(signum)
    try:
        return await run_window(window, probe=probe, desktop=True)
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _close_on_signal(window: MainWindow, signum: int) -> None:
    log.info("%s received: closing the window", signal.Signals(signum).name)
    window.close()


def install_desktop(window: MainWindow) -> None:
    """The tray icon (where the desktop has a tray) and the global push-to-talk key."""
    from gui.global_hotkey import GlobalHotkey
    from gui.tray import Tray

    window.tray = Tray.install(window)
    window.hotkey = GlobalHotkey(window)
    window.hotkey.pressed.connect(window.press)
    window.hotkey.released.connect(window.release)
    grab_global_key(window)


def grab_global_key(window: MainWindow) -> None:
    """(Re)grab the key the settings name; a key that cannot work is said in the banner."""
    if window.hotkey is None:
        return
    key = window.session.settings.global_ptt_key
    if not window.hotkey.set_key(key) and key:
        window.banner.show_hint(window.hotkey.message)


async def open_settings(window: MainWindow) -> None:
    """The settings dialog, filled with what the keyring holds (read off the window's thread)."""
    from gui.settings_dialog import SettingsDialog, StoredSecrets

    loop = asyncio.get_running_loop()
    keys = await loop.run_in_executor(None, config.stored_keys)
    turn_password = await loop.run_in_executor(None, config.get_turn_password)
    headers = await loop.run_in_executor(None, config.mcp_header_values, window.session.settings.mcp_servers)
    note = window.hotkey.message if window.hotkey is not None else ""
    dialog = SettingsDialog(window.session.settings, StoredSecrets(keys, turn_password or "", headers), window,
                            hotkey_note=note)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.submitted.connect(lambda change: window.session.spawn(_save_from(dialog, window, change),
                                                                 "save the settings"))
    # open(), not exec(): a nested event loop would stall asyncio tasks under qasync.
    dialog.open()


async def _save_from(dialog: QWidget, window: MainWindow, change: SettingsChange) -> None:
    try:
        await window.session.apply(change)
    except ConfigError as exc:
        dialog.failed(str(exc))  # the dialog stays open with what was typed
        return
    if window.hotkey is not None and window.hotkey.key != change.settings.global_ptt_key:
        grab_global_key(window)
    dialog.accept()


async def ask_for_key(window: MainWindow, provider: str) -> None:
    """First run: no key for a provider that needs one. Store it (or keep it this session), then connect."""
    from gui.key_dialog import KeyDialog

    keyring = await asyncio.get_running_loop().run_in_executor(None, config.keyring_name)
    dialog = KeyDialog(provider, keyring, window)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.key_given.connect(lambda p, key, keep: window.session.spawn(_use_key(window, p, key, keep), "use the key"))
    dialog.open()


async def _use_key(window: MainWindow, provider: str, key: str, keep: bool) -> None:
    if not keep:
        window.session.use_key_for_session(provider, key)
        return
    await window.session.apply(SettingsChange(window.session.settings, {provider: key}))
    window.session.connect_call()


def _parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x", 1))
    except ValueError:
        return DEFAULT_SIZE
    return (width, height) if width > 0 and height > 0 else DEFAULT_SIZE


def render(path: str, size: tuple[int, int], demo: bool) -> MainWindow:
    """Build the window offscreen (optionally with the demo call) and save a PNG of it."""
    from gui import demo as demo_call

    application()
    tracker = demo_call.demo_tracker()
    window = build_window(Settings(), latency_stats=lambda: tracker.stats("response_latency"))
    window.resize(*size)
    window.show()
    window.install_latency_plot()
    if demo:
        window.status_line.set_provider(*demo_call.PROVIDER)
        demo_call.play(window.session.bridge, tracker)
    QApplication.processEvents()
    if not window.grab().save(path, "PNG"):
        raise OSError(f"could not write {path}")
    return window


def screenshot(argv: list[str]) -> int:
    """argv = [path, "WxH", "demo" or ""]."""
    path = argv[0]
    size = _parse_size(argv[1]) if len(argv) > 1 and argv[1] else DEFAULT_SIZE
    demo = len(argv) > 2 and argv[2] == "demo"
    try:
        window = render(path, size, demo)
    except OSError as exc:
        print(f"sandra: {exc}", file=sys.stderr)
        return 1
    window.allow_close()
    window.close()
    print(f"wrote {path} ({size[0]}x{size[1]})")
    return 0

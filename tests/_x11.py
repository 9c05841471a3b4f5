"""A real X server for the desktop-citizen tests: Xvfb, a window manager, a tray host.

`x_server()` starts a private Xvfb (and openbox on request) and yields its display
name. `TrayHost` owns the X11 system-tray selection (the freedesktop System Tray
Protocol) the way a panel does: it announces itself with a MANAGER message, and
reparents every window that asks to be docked, recording it. `FocusWindow` is another
application's window that holds the keyboard focus.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SYSTEM_TRAY_REQUEST_DOCK = 0


def _free_display() -> int:
    for number in range(90, 190):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            return number
    raise RuntimeError("no free X display number")


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)


@contextmanager
def x_server(*, window_manager: bool = False) -> Iterator[str]:
    """A private Xvfb (and openbox), torn down afterwards; yields ':N'."""
    tools = ["Xvfb", "xdotool"] + (["openbox"] if window_manager else [])
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"X tools missing ({', '.join(missing)}): run ./bootstrap.sh test, which installs them")
    number = _free_display()
    name = f":{number}"
    xvfb = subprocess.Popen(["Xvfb", name, "-screen", "0", "1280x800x24", "-nolisten", "tcp", "-ac"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes = [xvfb]
    try:
        _wait_for(lambda: Path(f"/tmp/.X11-unix/X{number}").exists(), 10, "Xvfb start")
        if window_manager:
            env = {**os.environ, "DISPLAY": name}
            processes.append(subprocess.Popen(["openbox", "--sm-disable"], env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            _wait_for_window_manager(name)
        yield name
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_window_manager(name: str, timeout: float = 30.0) -> None:
    """Until openbox manages a probe window. It owns WM_S0 long before it handles map
    requests (seconds on a loaded machine), and drops the requests that come meanwhile."""
    from Xlib import X, display

    d = display.Display(name)
    try:
        probe = d.screen().root.create_window(0, 0, 10, 10, 0, d.screen().root_depth)
        deadline = time.monotonic() + timeout
        while True:
            probe.unmap()
            probe.map()
            d.sync()
            for _ in range(20):
                # Framed, not just viewable: a map before openbox took over shows unmanaged.
                managed = probe.query_tree().parent != d.screen().root
                if managed and probe.get_attributes().map_state == X.IsViewable:
                    probe.destroy()
                    d.sync()
                    return
                time.sleep(0.05)
            if time.monotonic() > deadline:
                raise TimeoutError(f"openbox did not manage a window within {timeout} s")
    finally:
        d.close()


def xdotool(display_name: str, *args: str) -> str:
    result = subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": display_name},
                            capture_output=True, text=True, timeout=20, check=True)
    return result.stdout.strip()


class TrayHost:
    """Owner of _NET_SYSTEM_TRAY_S0 on its own connection and thread; `docked` lists window ids."""

    def __init__(self, display_name: str) -> None:
        from Xlib import X, display

        self._X = X
        self.display = display.Display(display_name)
        screen = self.display.screen()
        self.window = screen.root.create_window(0, 0, 200, 32, 0, screen.root_depth,
                                                event_mask=X.StructureNotifyMask | X.SubstructureNotifyMask)
        self.window.map()
        self._opcode = self.display.intern_atom("_NET_SYSTEM_TRAY_OPCODE")
        selection = self.display.intern_atom(f"_NET_SYSTEM_TRAY_S{self.display.get_default_screen()}")
        self.window.set_selection_owner(selection, X.CurrentTime)
        self.display.sync()
        assert self.display.get_selection_owner(selection) == self.window
        self._announce(screen.root, selection)
        self.docked: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tray-host", daemon=True)
        self._thread.start()

    def _announce(self, root, selection: int) -> None:
        from Xlib.protocol import event

        manager = event.ClientMessage(window=root, client_type=self.display.intern_atom("MANAGER"),
                                      data=(32, [self._X.CurrentTime, selection, self.window.id, 0, 0]))
        root.send_event(manager, event_mask=self._X.StructureNotifyMask)
        self.display.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            while self.display.pending_events():
                message = self.display.next_event()
                if message.type == self._X.ClientMessage and message.client_type == self._opcode:
                    _time, opcode, window_id, *_ = message.data[1]
                    if opcode == SYSTEM_TRAY_REQUEST_DOCK:
                        self._dock(window_id)
            time.sleep(0.02)

    def _dock(self, window_id: int) -> None:
        icon = self.display.create_resource_object("window", window_id)
        icon.reparent(self.window, 0, 0)
        icon.map()
        self.display.sync()
        self.docked.append(window_id)

    def children(self) -> list[int]:
        """The windows embedded in the tray now (asked on a connection of its own)."""
        from Xlib import display

        other = display.Display(self.display.get_display_name())
        try:
            window = other.create_resource_object("window", self.window.id)
            return [child.id for child in window.query_tree().children]
        finally:
            other.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.display.close()


class FocusWindow:
    """Another application's window, focused through the window manager; records keys it gets."""

    def __init__(self, display_name: str) -> None:
        from Xlib import X, display

        self._X = X
        self.display_name = display_name
        self.display = display.Display(display_name)
        screen = self.display.screen()
        self.window = screen.root.create_window(100, 100, 300, 200, 0, screen.root_depth,
                                                event_mask=X.KeyPressMask | X.KeyReleaseMask | X.FocusChangeMask)
        self.window.set_wm_name("other application")
        self.window.map()
        self.display.sync()
        _wait_for(lambda: self._viewable(), 10, "the other window to map")
        xdotool(display_name, "windowactivate", "--sync", str(self.window.id))
        self.keys: list[int] = []

    def _viewable(self) -> bool:
        return self.window.get_attributes().map_state == self._X.IsViewable

    def focused(self) -> bool:
        return xdotool(self.display_name, "getactivewindow") == str(self.window.id)

    def drain_keys(self) -> list[int]:
        while self.display.pending_events():
            event = self.display.next_event()
            if event.type in (self._X.KeyPress, self._X.KeyRelease):
                self.keys.append(event.detail)
        return self.keys

    def close(self) -> None:
        self.display.close()

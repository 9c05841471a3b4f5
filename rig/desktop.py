"""A real desktop for tests: a private X server, a window manager, keys and clicks through XTEST.

Offscreen Qt with QTest never shows what an X server sends (../shared/TESTING.md, "A real
desktop"): a held key there is one press and one release, while on X it is a press, then
after the autorepeat delay a release + press pair every 40 ms, most of them not flagged as
autorepeat by Qt. So these tests run the real app (`main.py`, a child process) on Xvfb
with openbox, press keys with `xdotool` (XTEST, like a keyboard) with X's default
autorepeat on, and watch the app from outside: its log file and its JSONL transcripts
under a private HOME. Sound goes through the private PulseAudio of rig/pulse_rig.py.

    with Desktop.started(tmp) as desktop, DesktopApp.started(tmp, desktop) as app:
        desktop.activate(app.window)
        desktop.key_down("space"); ...; desktop.key_up("space")
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rig.server_process import ROOT, private_env

REQUIRED_TOOLS = ("Xvfb", "openbox", "xdotool", "xset", "import", "identify", "convert")
SCREEN = "1280x800x24"


def missing_tools() -> list[str]:
    """The desktop tools this rig needs that are not installed (./bootstrap.sh test installs them)."""
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]


@dataclass(frozen=True)
class Autorepeat:
    """X's keyboard autorepeat, as `xset q` reports it."""

    on: bool
    delay_ms: int
    rate_hz: int


def parse_xset_autorepeat(text: str) -> Autorepeat:
    """Autorepeat from the output of `xset q`."""
    on = re.search(r"auto repeat:\s+(on|off)", text)
    timing = re.search(r"auto repeat delay:\s+(\d+)\s+repeat rate:\s+(\d+)", text)
    if on is None or timing is None:
        raise ValueError(f"no autorepeat settings in xset's output: {text[:300]!r}")
    return Autorepeat(on.group(1) == "on", int(timing.group(1)), int(timing.group(2)))


def _stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        time.sleep(interval)


class Desktop:
    """Xvfb on a free display number with openbox on it; XTEST input and screenshots through the X tools."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.display = ""
        self._xvfb: subprocess.Popen | None = None
        self._wm: subprocess.Popen | None = None

    @classmethod
    @contextlib.contextmanager
    def started(cls, workdir: Path) -> Iterator[Desktop]:
        desktop = cls(workdir)
        try:
            desktop.start()
            yield desktop
        finally:
            desktop.stop()

    @property
    def env(self) -> dict[str, str]:
        """The environment of a program on this desktop: DISPLAY set, Wayland and Qt's platform override gone."""
        env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
        env["DISPLAY"] = self.display
        return env

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        read_fd, write_fd = os.pipe()
        # -displayfd: the server picks a free display number and writes it when it is ready.
        self._xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", SCREEN, "-nolisten", "tcp"],
            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()
        if not number:
            raise RuntimeError(f"Xvfb did not start (exit {self._xvfb.wait(5)})")
        self.display = f":{number}"
        # openbox with its own HOME: no user configuration, no autostart programs.
        wm_home = self.workdir / "wm-home"
        wm_home.mkdir(exist_ok=True)
        ready = self.workdir / "openbox-ready"
        ready.unlink(missing_ok=True)
        # --startup runs once openbox manages the screen: windows mapped after that get frames and focus.
        self._wm = subprocess.Popen(
            ["openbox", "--sm-disable", "--startup", f"touch {shlex.quote(str(ready))}"],
            env={**self.env, "HOME": str(wm_home), "XDG_CONFIG_HOME": str(wm_home / ".config")},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_for(lambda: self._wm_ready(ready), 20, "openbox did not take the screen")

    def _wm_ready(self, ready: Path) -> bool:
        if self._wm is not None and self._wm.poll() is not None:
            raise RuntimeError(f"openbox exited ({self._wm.returncode})")
        return ready.exists()

    def stop(self) -> None:
        for proc in (self._wm, self._xvfb):
            if proc is not None:
                _stop_process(proc)
        self._wm = self._xvfb = None

    # ---- X tools ----------------------------------------------------------------------------
    def run(self, *args: str, timeout: float = 20) -> str:
        """Run an X client on this desktop; its stdout."""
        result = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()[:500]}")
        return result.stdout

    def autorepeat(self) -> Autorepeat:
        return parse_xset_autorepeat(self.run("xset", "q"))

    def find_window(self, name: str, timeout: float = 60) -> str:
        """The id of the first visible window whose title matches `name`; waits for it to appear."""
        try:
            out = self.run("xdotool", "search", "--sync", "--onlyvisible", "--name", name, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"no window named {name!r} appeared within {timeout:.0f} s") from None
        return out.split()[0]

    def active_window(self) -> str:
        return self.run("xdotool", "getactivewindow").strip()

    def activate(self, window: str) -> None:
        """Raise and focus `window` through the window manager, and wait until it has the focus."""
        self.run("xdotool", "windowactivate", "--sync", window)

    def key_down(self, key: str) -> None:
        """Press `key` through XTEST: while it is held, X autorepeats it as a keyboard would."""
        self.run("xdotool", "keydown", key)

    def key_up(self, key: str) -> None:
        self.run("xdotool", "keyup", key)

    def click(self, window: str, x: int, y: int, button: int = 1) -> None:
        """Click at (x, y) inside `window`."""
        self.run("xdotool", "mousemove", "--window", window, str(x), str(y), "click", str(button))

    def window_geometry(self, window: str) -> tuple[int, int, int, int]:
        """(x, y, width, height) of `window` on the screen."""
        values = dict(line.split("=", 1) for line in self.run("xdotool", "getwindowgeometry", "--shell", window).split())
        return int(values["X"]), int(values["Y"]), int(values["WIDTH"]), int(values["HEIGHT"])

    def screenshot(self, path: Path) -> Path:
        """The whole screen as a PNG (ImageMagick's import, as a person's screenshot tool would)."""
        self.run("import", "-window", "root", str(path))
        return path


class DesktopApp:
    """The real app (`python main.py`) on a Desktop, with a private HOME, PulseAudio and the local provider.

    The default settings mean the local provider: the app starts its embedded local
    server itself. What the app does is read from outside: its log file and transcripts.
    """

    TITLE = "Sandra"

    def __init__(self, workdir: Path, desktop: Desktop, pulse_env: dict[str, str], args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.desktop = desktop
        self.home = workdir / "app-home"
        self.home.mkdir(parents=True, exist_ok=True)
        self._pulse_env = pulse_env
        self._args = args
        self.stderr_path = workdir / "app-stderr.log"
        self.proc: subprocess.Popen | None = None
        self.window = ""

    @classmethod
    @contextlib.contextmanager
    def started(cls, workdir: Path, desktop: Desktop, pulse_env: dict[str, str]) -> Iterator[DesktopApp]:
        app = cls(workdir, desktop, pulse_env)
        try:
            app.start()
            yield app
        finally:
            app.stop()

    @property
    def log_dir(self) -> Path:
        return self.home / ".local" / "state" / "sandra" / "log"  # platformdirs' user_log_dir under XDG_STATE_HOME

    @property
    def transcripts_dir(self) -> Path:
        return self.home / ".local" / "share" / "sandra" / "transcripts"

    def env(self) -> dict[str, str]:
        env = private_env(self.home, None)
        env.update({k: v for k, v in self.desktop.env.items() if k == "DISPLAY"})
        for var in ("WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
            env.pop(var, None)
        env.update(self._pulse_env)
        return env

    def start(self, timeout: float = 60) -> None:
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *self._args], cwd=ROOT,
                                         env=self.env(), stdout=subprocess.DEVNULL, stderr=stderr)
        self.window = self.desktop.find_window(self.TITLE, timeout)
        self.wait_for_log("-> Connected", timeout)

    def stop(self, timeout: float = 20) -> int | None:
        """Close the app as a session manager would (SIGTERM); its exit code (-9: it hung and was killed)."""
        if self.proc is None:
            return None
        _stop_process(self.proc, timeout)
        return self.proc.returncode

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def log(self, name: str = "sandra.log") -> str:
        """One of the app's logs, rotated parts first: sandra.log (the window), server.log (its embedded server)."""
        parts = sorted(self.log_dir.glob(f"{name}*"), key=lambda p: (p.name != name, p.name), reverse=True)
        return "".join(path.read_text(errors="replace") for path in parts)  # .5 … .1, then the current file

    def wait_for_log(self, text: str, timeout: float) -> None:
        def seen() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the app exited ({self.proc.returncode}): {self.stderr()[-2000:]}")
            return text in self.log()

        _wait_for(seen, timeout, f"{text!r} did not appear in the app's log", interval=0.2)

    def messages(self) -> list[dict[str, Any]]:
        """Every transcript message the app wrote, oldest first ({"role", "content", …})."""
        messages: list[dict[str, Any]] = []
        if not self.transcripts_dir.is_dir():
            return messages
        for path in sorted(self.transcripts_dir.glob("*.jsonl"), key=lambda p: p.stat().st_mtime):
            for line in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    messages.append(json.loads(line))
        return messages

    def orphans(self) -> list[int]:
        """Processes still running with this app's private HOME (the embedded server, say)."""
        marker = f"HOME={self.home}".encode()
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if marker in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
            except OSError:
                continue
        return found

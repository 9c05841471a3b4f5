"""Ctrl+C (SIGINT) and SIGTERM on `python main.py` close the window like Quit: the call
is hung up, the built-in local server stopped, and the process exits 0."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.config import Settings, save_settings

ROOT = Path(__file__).resolve().parent.parent
SERVER_READY = re.compile(r"local server ready at \S+ \(pid (\d+)\)")
CONNECTED = "call state: connecting -> Connected"

pytestmark = pytest.mark.timeout(90)


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its parent to reap it has stopped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Lines:
    """stderr of a child, line by line, read on a thread so waiting can time out."""

    def __init__(self, stream) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self._queue.put(line) for line in stream], daemon=True).start()

    def wait_for(self, pattern: re.Pattern[str] | str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(line)
            if (pattern.search(line) if isinstance(pattern, re.Pattern) else pattern in line):
                return line
        raise AssertionError(f"no {pattern!r} within {timeout:.0f} s; stderr so far:\n{''.join(self.seen)[-3000:]}")

    def rest(self, timeout: float = 5.0) -> str:
        """Everything seen, plus what the child wrote before it exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.seen.append(self._queue.get(timeout=0.2))
            except queue.Empty:
                break
        return "".join(self.seen)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_closes_the_window_cleanly(signum: int, pulse, private_home: Path) -> None:
    # First launch defaults (local provider, embedded server), on the rig's sound devices.
    save_settings(Settings(input_device="pulse", output_device="pulse"))
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    app = subprocess.Popen([sys.executable, "main.py", "-v"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lines = Lines(app.stderr)
        server_pid = int(SERVER_READY.search(lines.wait_for(SERVER_READY, 45)).group(1))
        lines.wait_for(CONNECTED, 30)
        assert alive(server_pid)
        app.send_signal(signum)
        code = app.wait(30)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(5)
    stderr = lines.rest()
    assert code == 0, stderr[-3000:]
    assert f"{signal.Signals(signum).name} received: closing the window" in stderr
    assert "Task was destroyed" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert not alive(server_pid), f"the local server (pid {server_pid}) outlived the app"

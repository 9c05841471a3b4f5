"""The X server going away under the window: one clear line and an exit, no traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(90)


def _start_xvfb() -> tuple[subprocess.Popen, str]:
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1100x720x24", "-nolisten", "tcp"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        display = pipe.readline().strip()
    assert display, "Xvfb did not report its display"
    return xvfb, f":{display}"


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed (./bootstrap.sh test installs it)")
def test_display_lost_ends_with_one_clear_line(tmp_path, pulse):
    xvfb, display = _start_xvfb()
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env.update(DISPLAY=display, QT_QPA_PLATFORM="xcb", HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "c"),
               XDG_DATA_HOME=str(tmp_path / "d"), XDG_STATE_HOME=str(tmp_path / "s"))
    app = subprocess.Popen([sys.executable, str(ROOT / "main.py")], env=env, cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        log = tmp_path / "s" / "sandra" / "log" / "sandra.log"
        deadline = time.monotonic() + 30
        while not (log.exists() and "connecting -> Connected" in log.read_text()):
            assert app.poll() is None and time.monotonic() < deadline, "the window never got going"
            time.sleep(0.2)
        xvfb.terminate()
        xvfb.wait(10)
        _, stderr = app.communicate(timeout=30)
    finally:
        for proc in (app, xvfb):
            if proc.poll() is None:
                proc.kill()
    assert app.returncode == 1
    assert "display went away" in stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-2000:]
    time.sleep(1.0)
    assert not _servers_of(tmp_path), "the embedded server outlived the app"


def _servers_of(home: Path) -> list[int]:
    """Local server processes started with this test's private home."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if b"serve" in (proc / "cmdline").read_bytes() and f"HOME={home}".encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return found

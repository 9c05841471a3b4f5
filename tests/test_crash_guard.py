"""No silent death: uncaught exceptions in a Qt slot, an asyncio task and a thread are logged
and shown, and the app goes on (a child process, so the hooks touch no other test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r'''
import asyncio, logging, os, sys, threading
os.environ["QT_QPA_PLATFORM"] = "offscreen"
sys.path.insert(0, sys.argv[1])
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="LOG %(levelname)s %(name)s: %(message)s")
from PySide6.QtCore import QTimer
from gui import crash_guard, event_loop
from gui.app import application

shown = []
app = application()

async def main():
    loop = asyncio.get_running_loop()
    crash_guard.install(shown.append, loop)
    QTimer.singleShot(0, lambda: 1 / 0)                                  # a Qt slot
    loop.create_task(asyncio.sleep(0)).add_done_callback(lambda _t: {}["missing"])  # a loop callback
    async def failing():
        raise ValueError("a task nobody awaited")
    task = loop.create_task(failing())
    threading.Thread(target=lambda: [][1], name="portaudio-like").start()  # a thread
    await asyncio.sleep(0.5)
    del task
    import gc; gc.collect()
    await asyncio.sleep(0.3)
    print("STILL RUNNING")
    for message in shown:
        print("SHOWN", message)

event_loop.run(main())
'''


def test_uncaught_exceptions_are_logged_and_shown_and_the_app_goes_on(tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    script.write_text(SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(ROOT)], capture_output=True, text=True, timeout=60)
    out = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert "STILL RUNNING" in out
    shown = [line for line in out.splitlines() if line.startswith("SHOWN")]
    for what in ("ZeroDivisionError", "KeyError", "ValueError", "IndexError"):
        assert any(what in line for line in shown), f"{what} was not shown: {shown}"
        assert any(line.startswith("LOG ERROR") for line in out.splitlines()), out
    assert all("the log has the details" in line for line in shown)

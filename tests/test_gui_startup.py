"""`python main.py` paints its window and closes cleanly (the bench's probe path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gui.app import FIRST_PAINT_MARK, PROBE_ENV

ROOT = Path(__file__).resolve().parent.parent


def test_app_paints_then_closes_cleanly_and_remembers_geometry(private_home: Path) -> None:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONASYNCIODEBUG="1")
    env[PROBE_ENV] = "1"
    result = subprocess.run([sys.executable, "main.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert FIRST_PAINT_MARK in result.stdout
    assert "Task was destroyed" not in result.stderr
    assert "Traceback" not in result.stderr
    from core.config import load_settings

    assert load_settings().window_geometry, "closing the window must save its geometry"

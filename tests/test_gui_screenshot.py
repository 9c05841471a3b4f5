"""`main.py --screenshot` as a real process: a PNG of the window, with the plot drawn in --demo."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from PySide6.QtGui import QColor, QImage

from base.selftest import run as run_checks
from gui.latency_plot import _P95_COLOR, _P99_COLOR, _POINT_COLOR

ROOT = Path(__file__).resolve().parent.parent


def _screenshot(tmp_path: Path, private_home: Path, *extra: str) -> QImage:
    out = tmp_path / "window.png"
    env = dict(os.environ, HOME=str(private_home))
    env.pop("QT_QPA_PLATFORM", None)  # main.py must set the offscreen platform itself
    result = subprocess.run([sys.executable, "main.py", "--screenshot", str(out), *extra], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    image = QImage(str(out))
    assert not image.isNull()
    return image


def _near(image: QImage, x: int, y: int, target: QColor) -> bool:
    c = QColor(image.pixel(x, y))
    return abs(c.red() - target.red()) + abs(c.green() - target.green()) + abs(c.blue() - target.blue()) < 40


def _dash_rows(image: QImage, colour: str) -> int:
    """Rows holding a dashed horizontal line of `colour`: at least 5 runs of 6+ such pixels."""
    target = QColor(colour)
    rows = 0
    for y in range(image.height()):
        runs = length = 0
        for x in range(image.width()):
            length = length + 1 if _near(image, x, y, target) else 0
            runs += length == 6
        rows += runs >= 5
    return rows


def _pixels(image: QImage, colour: str) -> int:
    target = QColor(colour)
    count = 0
    for y in range(0, image.height(), 2):
        for x in range(0, image.width(), 2):
            count += _near(image, x, y, target)
    return count


def test_demo_screenshot_shows_the_plot_and_its_lines(tmp_path: Path, private_home: Path) -> None:
    image = _screenshot(tmp_path, private_home, "--demo")
    assert (image.width(), image.height()) == (1100, 720)
    assert _pixels(image, _POINT_COLOR) > 150  # points and their line
    assert _dash_rows(image, _P95_COLOR) >= 1
    assert _dash_rows(image, _P99_COLOR) >= 1


def test_plain_screenshot_has_no_plot_data_and_honours_size(tmp_path: Path, private_home: Path) -> None:
    image = _screenshot(tmp_path, private_home, "--size", "800x500")
    assert (image.width(), image.height()) == (800, 500)
    assert _dash_rows(image, _P95_COLOR) == 0
    assert _pixels(image, _POINT_COLOR) < 50


def test_self_test_check_paints_the_window(qtbot) -> None:
    out = io.StringIO()
    assert run_checks([("main window", "gui.selftest:selftest_check")], out)
    assert "window painted" in out.getvalue()

"""Help menu dialogs: About (with versions) and Keyboard shortcuts."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

import PySide6
from PySide6.QtCore import qVersion
from PySide6.QtWidgets import QMessageBox, QWidget

SHORTCUTS: list[tuple[str, str]] = [
    ("Space (hold)", "Talk; release to send. While Sandra speaks: interrupt her"),
    ("Ctrl+K", "Connect"),
    ("Ctrl+Shift+H", "Hang up"),
    ("Ctrl+Shift+F", "Hands-free on/off"),
    ("Ctrl+E", "Export conversation…"),
    ("Ctrl+,", "Settings…"),
    ("F1", "Keyboard shortcuts"),
    ("Ctrl+Q", "Quit"),
]


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    found = {"Sandra Desktop": _version("sandra-desktop"), "Python": platform.python_version(),
             "Qt": qVersion(), "PySide6": PySide6.__version__}
    for package in ("qasync", "aiortc", "pyqtgraph", "numpy", "sounddevice"):
        found[package] = _version(package)
    return found


def show_about(parent: QWidget) -> None:
    rows = "".join(f"<tr><td>{name}</td><td>&nbsp;{value}</td></tr>" for name, value in versions().items())
    QMessageBox.about(
        parent,
        "About Sandra Desktop",
        "<h3>Sandra Desktop</h3><p>A push-to-talk voice assistant. Works offline with the "
        f"built-in local server, or with OpenAI-compatible providers.</p><table>{rows}</table>",
    )


def show_shortcuts(parent: QWidget) -> None:
    rows = "".join(f"<tr><td><b>{keys}</b></td><td>&nbsp;&nbsp;{what}</td></tr>" for keys, what in SHORTCUTS)
    QMessageBox.information(parent, "Keyboard shortcuts", f"<table>{rows}</table>")

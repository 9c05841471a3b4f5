"""The one-way arrows between the parts: base <- core <- gui, base <- server; main.py knows all.

core/ never reaches Qt, server/ or gui/ (not by an import, not by a module path in a
string for importlib); base/ reaches none of core/, server/, gui/; server/ never
reaches gui/ or core/. Checked twice: statically over the source, and by importing
every core module in a fresh interpreter and looking at what got loaded.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QT_PREFIXES = ("PySide6", "shiboken6", "qasync", "pyqtgraph", "PyQt5", "PyQt6")
FORBIDDEN = {
    "core": {"gui", "server", *QT_PREFIXES},
    "base": {"core", "gui", "server", *QT_PREFIXES},
    "server": {"core", "gui", *QT_PREFIXES},
}
# "server.realtime.cli:main", "gui.app" …: a module path handed to importlib by name.
MODULE_STRING = re.compile(r"^([a-z_]+)(\.[a-z_]+)+(:[a-z_]+)?$|^([a-z_]+):[a-z_]+$")


def _reaches(path: Path) -> set[str]:
    """Top-level packages a module imports, or names as a module path in a string."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = MODULE_STRING.match(node.value)
            if match:
                found.add(node.value.split(".")[0].split(":")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_arrow_points_the_wrong_way(package: str) -> None:
    wrong = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _reaches(path) & FORBIDDEN[package]
        if bad:
            wrong[str(path.relative_to(ROOT))] = sorted(bad)
    assert not wrong, f"{package}/ reaches what it must not: {wrong}"


def test_the_checker_sees_imports_and_importlib_strings(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text('import importlib\nfrom gui import app\nimportlib.import_module("server.realtime.tts")\n'
                      'TARGET = "gui.selftest:selftest_check"\n')
    assert {"gui", "server"} <= _reaches(sneaky)


def test_importing_every_core_module_loads_no_qt_server_or_gui():
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / "core").rglob("*.py")
                     if p.stem != "__init__")
    assert len(modules) >= 10, modules
    script = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {(*QT_PREFIXES, 'server', 'gui')!r})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"core/ loaded: {result.stdout.strip()}"

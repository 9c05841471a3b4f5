"""Decide what the bundle leaves out (used by sandra.spec).

Two steps. First, drop by destination path (binaries and data files) the Qt parts the app never loads (other
platforms, Wayland/EGL integration, image formats it does not read, translations).
Second, drop every shared library that nothing kept still links to: PyInstaller
collected the dependencies of what step one removed (libQt6WaylandClient, gtk's
cairo/pango for the gtk3 theme, …), and those would otherwise ride along unused.

What is kept at the root of that second step: Python extension modules, Qt plugins,
libpython, and the libraries the app opens itself with ctypes/cffi (named by the spec).
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
from collections.abc import Iterable

# Destination paths (inside the bundle) that are never loaded by this app.
DROP = [
    "PySide6/Qt/translations/*",
    # The app runs on X11 (xcb) and headless (offscreen); no Wayland, EGL-FS, VNC, ….
    "PySide6/Qt/plugins/platforms/*",
    "PySide6/Qt/plugins/egldeviceintegrations/*",
    "PySide6/Qt/plugins/wayland-*",
    "PySide6/Qt/plugins/generic/*",
    # The gtk3 theme drags in gtk's whole stack; the app styles itself with style.qss.
    "PySide6/Qt/plugins/platformthemes/*",
    # Widgets and pyqtgraph's 2-D plots paint in software; no OpenGL context is made.
    "PySide6/Qt/plugins/xcbglintegrations/*",
    # The window icon is a PNG (built into QtGui); no other image format is read.
    "PySide6/Qt/plugins/imageformats/*",
    "PySide6/Qt/plugins/iconengines/*",
    # Its dependency, Qt Quick, is not shipped.
    "PySide6/Qt/plugins/platforminputcontexts/libqtvirtualkeyboardplugin.so",
]
KEEP = [
    "PySide6/Qt/plugins/platforms/libqxcb.so",
    "PySide6/Qt/plugins/platforms/libqoffscreen.so",
]

_ELF_ENTRY = re.compile(r"\((NEEDED|SONAME)\)\s+.*\[(.+)\]")


def _dropped_by_path(dest: str) -> bool:
    dest = dest.replace(os.sep, "/")
    return any(fnmatch.fnmatch(dest, p) for p in DROP) and not any(fnmatch.fnmatch(dest, p) for p in KEEP)


def _elf_names(path: str) -> tuple[set[str], set[str]]:
    """(NEEDED names, own names: file name and SONAME) of one shared object."""
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True).stdout
    needed, own = set(), {os.path.basename(path)}
    for kind, name in _ELF_ENTRY.findall(out):
        (needed if kind == "NEEDED" else own).add(name)
    return needed, own


def _is_root(dest: str, typecode: str, ctypes_libs: set[str]) -> bool:
    name = os.path.basename(dest)
    return (
        typecode == "EXTENSION"
        or dest.replace(os.sep, "/").startswith("PySide6/Qt/plugins/")
        or name.startswith("libpython")
        or name in ctypes_libs
    )


def drop_datas(datas: Iterable[tuple]) -> list[tuple]:
    """The data files worth shipping (translations and the like go)."""
    return [e for e in datas if not _dropped_by_path(e[0])]


def prune(binaries: Iterable[tuple], ctypes_libs: Iterable[str]) -> tuple[list[tuple], list[str]]:
    """Return (binaries to keep, destinations dropped), given PyInstaller's binaries TOC."""
    entries = [e for e in binaries if e[2] != "SYMLINK"]
    symlinks = [e for e in binaries if e[2] == "SYMLINK"]
    kept = [e for e in entries if not _dropped_by_path(e[0])]
    elf = {e[0]: _elf_names(e[1]) for e in kept}
    # Walk the link graph from the roots; whatever is not reached is dead weight.
    by_name: dict[str, list[str]] = {}
    for dest, (_, own) in elf.items():
        for name in own:
            by_name.setdefault(name, []).append(dest)
    roots = {e[0] for e in kept if _is_root(e[0], e[2], set(ctypes_libs))}
    reached, todo = set(), list(roots)
    while todo:
        dest = todo.pop()
        if dest in reached:
            continue
        reached.add(dest)
        for name in elf[dest][0]:
            todo.extend(by_name.get(name, []))
    keep = [e for e in kept if e[0] in reached]
    kept_dests = {e[0] for e in keep}
    # A symlink's source field is its target's destination path.
    keep += [e for e in symlinks if os.path.normpath(os.path.join(os.path.dirname(e[0]), e[1])) in kept_dests]
    dropped = sorted({e[0] for e in binaries} - {e[0] for e in keep})
    return keep, dropped

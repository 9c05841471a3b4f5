"""Strip symbol tables and debug info from the bundle's shared objects (used by sandra.spec).

PyInstaller's own strip=True is all or nothing, and it breaks the libraries that
auditwheel rewrote with patchelf: numpy's OpenBLAS then fails to load with "ELF load
command address/offset not page-aligned". Those rewritten files are recognisable by
the $ORIGIN run path patchelf gave them, and wheels ship them stripped anyway; what
carries debug info is the rest (libpython alone: 17 MB), so strip only that.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

_ELF_MAGIC = b"\x7fELF"


def _is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == _ELF_MAGIC


def _rewritten_by_patchelf(path: Path) -> bool:
    dynamic = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return "$ORIGIN" in dynamic


def strippable(folder: Path) -> list[Path]:
    found = []
    for p in sorted(folder.rglob("*.so*")):
        if p.is_file() and not p.is_symlink() and _is_elf(p) and not _rewritten_by_patchelf(p):
            found.append(p)
    return found


def strip_tree(folder: Path) -> int:
    """Strip what is safe to strip under folder; return the bytes saved."""
    files = strippable(folder)
    before = sum(p.stat().st_size for p in files)
    for start in range(0, len(files), 100):
        subprocess.run(["strip", *map(os.fspath, files[start : start + 100])], check=True)
    return before - sum(p.stat().st_size for p in files)

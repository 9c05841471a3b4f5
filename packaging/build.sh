#!/usr/bin/env bash
# Build Sandra Desktop's one-folder bundle from a fresh clone (Debian, x86_64):
#   packaging/build.sh     ->  dist/sandra/sandra  and  dist/sandra-VERSION-linux-x86_64.tar.gz
# SANDRA_DIST and SANDRA_WORK move the output and PyInstaller's work folder (tests build
# into a temporary folder so parallel builds do not collide).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
dist=$(realpath -m "${SANDRA_DIST:-dist}")
work=$(realpath -m "${SANDRA_WORK:-build}")

# System packages and the venv with the runtime dependencies.
./bootstrap.sh env
# PyInstaller reads and strips ELF files with binutils (readelf, objdump, strip).
command -v readelf >/dev/null && command -v strip >/dev/null || {
  echo "build: binutils is missing (readelf, strip): apt-get install binutils" >&2; exit 1; }
.venv/bin/python -c "import PyInstaller" 2>/dev/null || .venv/bin/python -m pip install -q -e '.[package]'

.venv/bin/python -m PyInstaller --noconfirm --log-level WARN \
  --distpath "$dist" --workpath "$work" packaging/sandra.spec
bundle="$dist/sandra"
# Next to the executable: how to put it in the desktop menu, and the project's licence.
cp packaging/install-desktop-entry.sh LICENSE "$bundle/"
.venv/bin/python packaging/licenses.py write "$bundle"

version=$(.venv/bin/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
tarball="$dist/sandra-$version-linux-x86_64.tar.gz"
tar -C "$dist" -czf "$tarball" sandra

mb() { du -sb "$1" | awk '{printf "%.0f", $1 / 1e6}'; }
echo "build: bundle $bundle/sandra: $(mb "$bundle") MB uncompressed," \
  "tarball $(mb "$tarball") MB, built in $(( $(date +%s) - started )) s"

#!/usr/bin/env bash
# Put Sandra in the desktop's application menu, for this user only:
#   ./install-desktop-entry.sh            from the unpacked bundle folder (next to `sandra`)
#   packaging/install-desktop-entry.sh dist/sandra     from a source checkout
# Writes the .desktop entry (pointing at this folder's executable) and the icon under
# ${XDG_DATA_HOME:-~/.local/share}. Move the folder later? Run it again.
set -euo pipefail
bundle=$(realpath "${1:-$(dirname "$0")}")
[ -x "$bundle/sandra" ] || { echo "install-desktop-entry: no executable at $bundle/sandra" >&2; exit 1; }
resources="$bundle/_internal/resources"
for f in sandra.desktop sandra.png; do
  [ -f "$resources/$f" ] || { echo "install-desktop-entry: $resources/$f is missing" >&2; exit 1; }
done

data=${XDG_DATA_HOME:-$HOME/.local/share}
mkdir -p "$data/applications" "$data/icons/hicolor/256x256/apps"
cp "$resources/sandra.png" "$data/icons/hicolor/256x256/apps/sandra.png"
if [ -f "$resources/sandra.svg" ]; then
  mkdir -p "$data/icons/hicolor/scalable/apps"
  cp "$resources/sandra.svg" "$data/icons/hicolor/scalable/apps/sandra.svg"
fi
# The entry says Exec=sandra; a bundle is not on PATH, so point at it (quoted: spaces).
sed "s|^Exec=.*|Exec=\"$bundle/sandra\"|; s|^TryExec=.*||" "$resources/sandra.desktop" \
  > "$data/applications/sandra.desktop"
command -v update-desktop-database >/dev/null && update-desktop-database -q "$data/applications" || true
echo "installed $data/applications/sandra.desktop -> $bundle/sandra"

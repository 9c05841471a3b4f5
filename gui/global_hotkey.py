"""Global push-to-talk: a key that works while another application has focus.

On X11 the key is grabbed on the root window (XGrabKey, once per NumLock/CapsLock
combination, since those count as modifiers), and a thread reads its KeyPress and
KeyRelease events and hands them to the window's thread through a queued signal.
A held key under X autorepeat arrives as release/press pairs with the same server
time: those are dropped here, and what slips through is one hold anyway for the
engine's turn table (a release is final only if no press follows within 50 ms).

On Wayland a client cannot grab keys; the XDG desktop portal's GlobalShortcuts
interface would be the way, and Sandra does not speak it yet, so it says so instead
of pretending. The same when another application already holds the key.
"""

from __future__ import annotations

import enum
import logging
import os
import select
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from PySide6.QtCore import QObject, Qt, Signal

from base.errors import SandraError

log = logging.getLogger(__name__)

# Modifier names a user may write, and the X modifier they stand for (resolved per display).
_MODIFIERS = {"ctrl": "Control", "control": "Control", "alt": "Alt", "shift": "Shift",
              "super": "Super", "meta": "Super", "win": "Super"}


class HotkeyError(SandraError):
    """The global key cannot work here; the message says why and what still works."""


@dataclass(frozen=True)
class KeySpec:
    """A parsed key: its X keysym and the modifiers held with it."""

    text: str  # as the user wrote it, normalised ("Ctrl+Alt+Space")
    keysym: int
    modifiers: frozenset[str]  # "Control", "Alt", "Shift", "Super"


def parse_key(text: str) -> KeySpec:
    """"Ctrl+Alt+Space" → KeySpec. ValueError with a readable message when it is not a key."""
    from Xlib import XK

    parts = [part.strip() for part in text.split("+")]
    if not text.strip() or any(not part for part in parts):
        raise ValueError(f"'{text}' is not a key combination; write it like Ctrl+Alt+Space.")
    *modifier_names, key_name = parts
    modifiers = set()
    for name in modifier_names:
        if name.lower() not in _MODIFIERS:
            raise ValueError(f"'{name}' is not a modifier; use Ctrl, Alt, Shift or Super.")
        modifiers.add(_MODIFIERS[name.lower()])
    keysym = 0
    for candidate in (key_name, key_name.lower(), key_name.capitalize()):
        keysym = XK.string_to_keysym(candidate)
        if keysym:
            break
    if not keysym:
        raise ValueError(f"'{key_name}' is not a key name (e.g. Space, F12, P).")
    pretty = "+".join([*(m if m != "Control" else "Ctrl" for m in sorted(modifiers, key=_ORDER.index)),
                       key_name if len(key_name) > 1 else key_name.upper()])
    return KeySpec(pretty, keysym, frozenset(modifiers))


_ORDER = ["Control", "Alt", "Shift", "Super"]


class Backend(enum.Enum):
    X11 = "x11"
    NONE = "none"


def choose_backend(key: str, environ: Mapping[str, str], platform: str = sys.platform) -> tuple[Backend, str]:
    """Where the key can be grabbed, and what to tell the user (a note even when it works)."""
    if not key:
        return Backend.NONE, "The global push-to-talk key is off."
    if not platform.startswith("linux") and "bsd" not in platform:
        return Backend.NONE, ("A global push-to-talk key is not available on this system yet; "
                              "hold Space while Sandra's window has focus.")
    if environ.get("WAYLAND_DISPLAY") and not environ.get("DISPLAY"):
        return Backend.NONE, ("On Wayland a global key needs the desktop portal's GlobalShortcuts "
                              "interface, which Sandra does not support yet, so the global key is not "
                              "available. Hold Space while Sandra's window has focus.")
    if not environ.get("DISPLAY"):
        return Backend.NONE, "No X display, so the global push-to-talk key is not available."
    if environ.get("WAYLAND_DISPLAY"):
        # XWayland: a grab only sees keys typed into other X11 windows.
        return Backend.X11, (f"Hold {key} to talk while an X11 (XWayland) application has focus; "
                             "Wayland applications do not pass it on.")
    return Backend.X11, f"Hold {key} anywhere to talk, even while another application has focus."


class X11Grab:
    """The key grabbed on one X display's root window, read by a thread until `stop()`."""

    def __init__(self, display_name: str, spec: KeySpec, on_key: Callable[[bool], None]) -> None:
        from Xlib import X, display, error

        self._X = X
        self._spec = spec
        self._on_key = on_key
        try:
            self._display = display.Display(display_name)
        except (error.DisplayError, OSError) as exc:
            raise HotkeyError(f"Cannot reach the X display {display_name} for the global key ({exc}).") from exc
        self._root = self._display.screen().root
        self._keycode = self._display.keysym_to_keycode(spec.keysym)
        if not self._keycode:
            self._display.close()
            raise HotkeyError(f"{spec.text} is not on this keyboard; choose another global key in Settings.")
        masks = self._modifier_masks()
        self._mask = 0
        for name in spec.modifiers:
            self._mask |= masks[name]
        # NumLock and CapsLock are modifiers to X: grab every combination of them too.
        locks = (X.LockMask, masks["NumLock"])
        self.autorepeat_pairs = 0  # release/press pairs of held keys, dropped
        self._variants = sorted({self._mask | extra for extra in (0, locks[0], locks[1], locks[0] | locks[1])})
        self._grab()
        self._wake_read, self._wake_write = os.pipe()
        self._thread = threading.Thread(target=self._run, name="global-hotkey", daemon=True)
        self._thread.start()

    def _modifier_masks(self) -> dict[str, int]:
        """Which of Mod1…Mod5 carries Alt, Super and NumLock on this display."""
        from Xlib import XK

        X = self._X
        masks = {"Control": X.ControlMask, "Shift": X.ShiftMask, "Alt": X.Mod1Mask, "Super": X.Mod4Mask,
                 "NumLock": X.Mod2Mask}
        wanted = {"Alt": ("Alt_L", "Alt_R"), "Super": ("Super_L", "Super_R"), "NumLock": ("Num_Lock",)}
        keycodes = {name: {self._display.keysym_to_keycode(XK.string_to_keysym(s)) for s in syms} - {0}
                    for name, syms in wanted.items()}
        mod_masks = (X.Mod1Mask, X.Mod2Mask, X.Mod3Mask, X.Mod4Mask, X.Mod5Mask)
        for index, codes in enumerate(self._display.get_modifier_mapping()[3:8]):
            for name, own in keycodes.items():
                if own & set(codes):
                    masks[name] = mod_masks[index]
        return masks

    def _grab(self) -> None:
        from Xlib import error

        X = self._X
        caught = error.CatchError(error.BadAccess)
        for mask in self._variants:
            self._root.grab_key(self._keycode, mask, False, X.GrabModeAsync, X.GrabModeAsync, onerror=caught)
        self._display.sync()
        if caught.get_error() is not None:
            self._ungrab()
            self._display.close()
            raise HotkeyError(f"{self._spec.text} is already taken by another application, so it cannot be "
                              "the global push-to-talk key. Choose another one in Settings.")
        log.info("global push-to-talk key %s grabbed (keycode %d, %d variants)",
                 self._spec.text, self._keycode, len(self._variants))

    def _ungrab(self) -> None:
        for mask in self._variants:
            self._root.ungrab_key(self._keycode, mask)
        self._display.sync()

    def _run(self) -> None:
        """The reading thread: the only user of the display once started."""
        try:
            while True:
                events = []
                while self._display.pending_events():
                    events.append(self._display.next_event())
                self._deliver(events)
                ready, _, _ = select.select([self._display.fileno(), self._wake_read], [], [])
                if self._wake_read in ready:
                    break
            self._ungrab()
        except Exception as exc:  # noqa: BLE001 - the display went away: the key stops, the app goes on
            log.info("the global push-to-talk key stopped: %s", type(exc).__name__)
        finally:
            try:
                self._display.close()
            except Exception:  # noqa: BLE001 - a display already gone cannot be closed politely
                log.debug("closing the key's display connection failed", exc_info=True)
            os.close(self._wake_read)

    def _deliver(self, events: list) -> None:
        X = self._X
        keys = [e for e in events if e.type in (X.KeyPress, X.KeyRelease) and e.detail == self._keycode]
        index = 0
        while index < len(keys):
            event = keys[index]
            following = keys[index + 1] if index + 1 < len(keys) else None
            # Autorepeat: a release and a press at the same server time are the hold going on.
            if (event.type == X.KeyRelease and following is not None and following.type == X.KeyPress
                    and following.time == event.time):
                self.autorepeat_pairs += 1
                index += 2
                continue
            self._on_key(event.type == X.KeyPress)
            index += 1

    def stop(self) -> None:
        if self._thread.is_alive():  # else the display went away and the thread is done
            os.write(self._wake_write, b"x")
            self._thread.join(timeout=2.0)
        os.close(self._wake_write)


class GlobalHotkey(QObject):
    """The global key for the window: `pressed`/`released` on the window's thread."""

    pressed = Signal()
    released = Signal()
    _from_thread = Signal(bool)

    def __init__(self, parent: QObject | None = None, *, environ: Mapping[str, str] | None = None) -> None:
        super().__init__(parent)
        self._environ = os.environ if environ is None else environ
        self.grab: X11Grab | None = None  # the grab in use, if any
        self.active = False
        self.key = ""  # the key last asked for, as written in the settings
        self._down = False
        self.message = "The global push-to-talk key is off."
        # Queued: the reading thread only posts; the slots run where this object lives.
        self._from_thread.connect(self._deliver, Qt.ConnectionType.QueuedConnection)

    def set_key(self, key: str) -> bool:
        """Grab `key` ("" = off) in place of the previous one. Whether it works; `message` says more."""
        self.close()
        self.key = key
        try:
            spec = parse_key(key) if key.strip() else None
        except ValueError as exc:
            self.message = str(exc)
            return False
        backend, note = choose_backend(spec.text if spec else "", self._environ)
        if backend is Backend.NONE or spec is None:
            self.message = note
            return False
        try:
            self.grab = X11Grab(self._environ["DISPLAY"], spec, self._from_thread.emit)
        except HotkeyError as exc:
            log.warning("global push-to-talk key unavailable: %s", exc)
            self.message = str(exc)
            return False
        self.active, self.message = True, note
        return True

    def _deliver(self, down: bool) -> None:
        self._down = down
        (self.pressed if down else self.released).emit()

    def close(self) -> None:
        """Let the key go (an app quitting releases it anyway; a settings change must not wait for that)."""
        if self.grab is not None:
            self.grab.stop()
            self.grab = None
        self.active = False
        if self._down:  # let go mid-hold: its release will never come, so end the turn here
            self._deliver(False)

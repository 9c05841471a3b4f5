"""Global push-to-talk on a real X server: one hold of the key, with another app focused, is one turn."""

from __future__ import annotations

import time

import pytest
from Xlib import X, XK, display, error

from core.call.protocol import CommitInput
from core.call.turn import RELEASE_GRACE_S, Turn
from core.config import Settings
from gui.app import application
from gui.global_hotkey import Backend, GlobalHotkey, choose_backend, parse_key
from gui.settings_dialog import SettingsDialog
from _x11 import FocusWindow, x_server, xdotool

HOLD_S = 1.5


class RecordingSession:
    """Stands in for CallSession: what reaches it, and when (the window thread's clock)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def press(self) -> None:
        self.calls.append(("press", time.monotonic()))

    def release(self) -> None:
        self.calls.append(("release", time.monotonic()))


def commits(calls: list[tuple[str, float]]) -> int:
    """Replay the recorded calls through the engine's turn table on their own timestamps."""
    turn, sent = Turn(), []
    for index, (kind, at) in enumerate(calls):
        outcome = turn.press(at) if kind == "press" else turn.release(at)
        sent.extend(outcome.send)
        following = calls[index + 1][1] if index + 1 < len(calls) else float("inf")
        if outcome.settle_at is not None and following >= outcome.settle_at:
            sent.extend(turn.settle(outcome.settle_at).send)
    return sum(isinstance(event, CommitInput) for event in sent)


def test_the_turn_replay_counts_an_autorepeat_hold_as_one() -> None:
    # The replay itself must be able to fail: pairs 40 ms apart are one hold, a pause is two.
    pairs = [("press", 0.0)] + [(k, 0.5 + n * 0.04) for n in range(10) for k in ("release", "press")]
    assert commits(pairs + [("release", 2.0)]) == 1
    assert commits([("press", 0.0), ("release", 0.5), ("press", 0.5 + RELEASE_GRACE_S * 3), ("release", 1.0)]) == 2


@pytest.mark.parametrize(("key", "environ", "backend", "says"), [
    ("", {"DISPLAY": ":0"}, Backend.NONE, "off"),
    ("Ctrl+Alt+Space", {"WAYLAND_DISPLAY": "wayland-0"}, Backend.NONE, "GlobalShortcuts"),
    ("Ctrl+Alt+Space", {}, Backend.NONE, "No X display"),
    ("Ctrl+Alt+Space", {"DISPLAY": ":0"}, Backend.X11, "another application has focus"),
    ("Ctrl+Alt+Space", {"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}, Backend.X11, "XWayland"),
])
def test_where_the_key_can_work(key, environ, backend, says) -> None:
    chosen, message = choose_backend(key, environ, "linux")
    assert chosen is backend and says in message


def test_key_names_parse_or_say_why() -> None:
    spec = parse_key("ctrl+ALT+space")
    assert (spec.text, spec.keysym, spec.modifiers) == ("Ctrl+Alt+space", XK.XK_space, {"Control", "Alt"})
    assert parse_key("Super+F12").keysym == XK.XK_F12
    for bad, why in (("Ctrl+", "not a key combination"), ("Hyper+A", "not a modifier"), ("Ctrl+Nokey", "not a key name")):
        with pytest.raises(ValueError, match=why):
            parse_key(bad)


def test_wayland_without_x_says_so_instead_of_pretending(qtbot) -> None:
    application()
    hotkey = GlobalHotkey(environ={"WAYLAND_DISPLAY": "wayland-0"})
    assert hotkey.set_key("Ctrl+Alt+Space") is False
    assert not hotkey.active and "not available" in hotkey.message


@pytest.fixture(scope="module")
def desktop():
    with x_server(window_manager=True) as name:
        yield name


@pytest.fixture
def wired(qtbot, desktop: str):
    """The global key on the private display, wired to a recording session."""
    application()
    hotkey = GlobalHotkey(environ={"DISPLAY": desktop})
    session = RecordingSession()
    hotkey.pressed.connect(session.press)
    hotkey.released.connect(session.release)
    yield hotkey, session
    hotkey.close()


def test_one_hold_with_another_app_focused_is_one_turn(qtbot, desktop: str, wired) -> None:
    hotkey, session = wired
    other = FocusWindow(desktop)
    try:
        assert hotkey.set_key("Ctrl+Alt+Space"), hotkey.message
        assert other.focused()
        xdotool(desktop, "keydown", "ctrl+alt+space")
        qtbot.wait(int(HOLD_S * 1000))  # X autorepeat (on by default) sends release/press pairs meanwhile
        xdotool(desktop, "keyup", "ctrl+alt+space")
        qtbot.waitUntil(lambda: [k for k, _ in session.calls][-1:] == ["release"], timeout=5000)
        qtbot.wait(200)  # nothing more may follow
        kinds = [kind for kind, _ in session.calls]
        assert kinds[0] == "press" and kinds[-1] == "release"
        assert hotkey.grab is not None and hotkey.grab.autorepeat_pairs >= 10  # the server did repeat
        assert commits(session.calls) == 1, session.calls
        held = session.calls[-1][1] - session.calls[0][1]
        assert HOLD_S - 0.2 < held < HOLD_S + 1.0
        assert other.focused()  # the key never took the focus from the other application
        space = other.display.keysym_to_keycode(XK.XK_space)
        assert space not in other.drain_keys()  # the grab took the key: the other app never saw Space
    finally:
        other.close()


def test_numlock_on_still_works_and_two_holds_are_two_turns(qtbot, desktop: str, wired) -> None:
    hotkey, session = wired
    assert hotkey.set_key("Ctrl+Alt+Space"), hotkey.message
    xdotool(desktop, "key", "Num_Lock")
    try:
        for _ in range(2):
            xdotool(desktop, "keydown", "ctrl+alt+space")
            qtbot.wait(400)
            xdotool(desktop, "keyup", "ctrl+alt+space")
            qtbot.wait(300)
        qtbot.waitUntil(lambda: len(session.calls) >= 4, timeout=5000)
        assert commits(session.calls) == 2, session.calls
    finally:
        xdotool(desktop, "key", "Num_Lock")


def test_a_key_another_app_holds_is_reported_not_pretended(desktop: str, wired) -> None:
    hotkey, _session = wired
    rival = display.Display(desktop)
    keycode = rival.keysym_to_keycode(XK.XK_F9)
    rival.screen().root.grab_key(keycode, X.ControlMask, False, X.GrabModeAsync, X.GrabModeAsync)
    rival.sync()
    try:
        assert hotkey.set_key("Ctrl+F9") is False
        assert not hotkey.active and "already taken by another application" in hotkey.message
        assert hotkey.set_key("Ctrl+F10"), hotkey.message  # a free key still works
    finally:
        rival.close()


def test_closing_mid_hold_ends_the_turn_and_frees_the_key(qtbot, desktop: str, wired) -> None:
    hotkey, session = wired
    assert hotkey.set_key("Ctrl+Alt+Space"), hotkey.message
    xdotool(desktop, "keydown", "ctrl+alt+space")
    qtbot.waitUntil(lambda: bool(session.calls), timeout=5000)
    hotkey.close()
    xdotool(desktop, "keyup", "ctrl+alt+space")
    assert [kind for kind, _ in session.calls] == ["press", "release"]
    # Freed: another client can grab it now.
    other = display.Display(desktop)
    caught = error.CatchError(error.BadAccess)
    other.screen().root.grab_key(other.keysym_to_keycode(XK.XK_space), X.ControlMask | X.Mod1Mask, False,
                                 X.GrabModeAsync, X.GrabModeAsync, onerror=caught)
    other.sync()
    assert caught.get_error() is None
    other.close()


def test_settings_show_the_key_its_state_and_refuse_a_non_key(qtbot) -> None:
    application()
    note = "On Wayland a global key needs the desktop portal's GlobalShortcuts interface"
    dialog = SettingsDialog(Settings(), hotkey_note=note)
    qtbot.addWidget(dialog)
    assert dialog.global_ptt_key.text() == "Ctrl+Alt+Space" and dialog.hotkey_note.text() == note
    submitted: list[object] = []
    dialog.submitted.connect(submitted.append)
    dialog.global_ptt_key.setText("Ctrl+Banana")
    dialog.submit()
    assert submitted == [] and "not a key name" in dialog._error.text()
    dialog.global_ptt_key.setText("")  # off is a choice too
    dialog.submit()
    assert [change.settings.global_ptt_key for change in submitted] == [""]

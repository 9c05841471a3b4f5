"""A timer rings: a short chime on the output device and a desktop notification.

The chime is synthesised (two soft bell tones) and played by sounddevice on a worker
thread of its own, never on the loop: opening a stream can block on the sound server.
The notification goes to org.freedesktop.Notifications on the session bus through
jeepney (keyring's own D-Bus library on Linux): PySide6's QtDBus cannot marshal the
spec's `u` and `as` arguments from Python (an int goes out as `i`, a list as `av`),
which GDBus-based daemons reject. The call blocks briefly, so it runs on the same
worker thread; where no notification service answers (no bus, no daemon, not Linux)
the tray's balloon or, failing that, the window's banner says it instead, back on
the loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads on the first ring, not before the window's first paint
    import numpy as np

log = logging.getLogger(__name__)

CHIME_RATE = 48_000
SERVICE = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"
APP_NAME = "Sandra"
NOTIFICATION_TIMEOUT_MS = 10_000
NOTIFY_TIMEOUT_S = 2.0
_TONES = ((880.0, 0.0), (1318.5, 0.18))  # (Hz, start s): A5 then E6, a rising two-note bell
_TONE_S = 0.6


def chime(rate: int = CHIME_RATE) -> np.ndarray:
    """The timer's sound: float32 mono in -1..1, about 0.8 s, soft attack and bell-like decay."""
    import numpy as np

    length = int(rate * (_TONES[-1][1] + _TONE_S))
    out = np.zeros(length, dtype=np.float32)
    t = np.arange(int(rate * _TONE_S)) / rate
    envelope = (1 - np.exp(-t / 0.005)) * np.exp(-t / 0.15)  # 5 ms attack: no click
    for frequency, start in _TONES:
        tone = envelope * (np.sin(2 * np.pi * frequency * t) + 0.3 * np.sin(4 * np.pi * frequency * t))
        first = int(start * rate)
        out[first:first + len(tone)] += tone.astype(np.float32)
    return (0.4 * out / np.max(np.abs(out))).astype(np.float32)


def play_on_device(samples: np.ndarray, device: str | None, rate: int = CHIME_RATE) -> None:
    """Play and wait (blocking: a worker thread's job). A device that fails is logged, not raised."""
    import sounddevice as sd

    try:
        sd.play(samples, rate, device=device, blocking=True)
    except (sd.PortAudioError, ValueError) as exc:  # unplugged, busy or unknown device
        log.warning("could not play the timer's chime on %s: %s", device or "the default device", exc)


def notify_desktop(summary: str, body: str, bus: str = "SESSION") -> bool:
    """Show a desktop notification (blocking); False when no notification service took it.
    `bus`: "SESSION" or a bus address (a test's private bus)."""
    try:
        from jeepney import DBusAddress, MessageType, new_method_call
        from jeepney.io.blocking import open_dbus_connection
    except ImportError:  # not Linux: no freedesktop notifications
        return False
    address = DBusAddress(PATH, bus_name=SERVICE, interface=SERVICE)
    message = new_method_call(address, "Notify", "susssasa{sv}i",
                              (APP_NAME, 0, "alarm-symbolic", summary, body, [], {}, NOTIFICATION_TIMEOUT_MS))
    try:
        with open_dbus_connection(bus=bus) as connection:
            reply = connection.send_and_get_reply(message, timeout=NOTIFY_TIMEOUT_S)
    except (OSError, KeyError, ValueError, TimeoutError) as exc:  # no bus address, socket gone, no answer
        log.info("no D-Bus session bus (%s): the timer is shown another way", type(exc).__name__)
        return False
    if reply.header.message_type is not MessageType.method_return:
        log.info("no notification service answered: the timer is shown another way")
        return False
    return True


class Notifier:
    """What a ringing timer does; `on_ring(label)` is Timers' callback (on the loop's thread)."""

    def __init__(self, output_device: Callable[[], str | None], fallback: Callable[[str, str], None],
                 notify: Callable[[str, str], bool] = notify_desktop,
                 play: Callable[[np.ndarray, str | None], None] = play_on_device) -> None:
        self._output_device = output_device
        self._fallback = fallback  # (title, text): the tray's balloon or the banner
        self._notify = notify
        self._play = play
        self._sound: np.ndarray | None = None  # made on the first ring, on the worker thread

    def on_ring(self, label: str) -> None:
        """On the loop's thread: the chime and the notification go to the worker thread."""
        loop = asyncio.get_running_loop()
        title, text = "Timer", f"{label}: time is up." if label else "Your timer is up."
        # A daemon thread per ring (rings are rare): a sound server that hangs the chime never holds up the exit.
        threading.Thread(target=self._ring, args=(loop, title, text, self._output_device()), name="chime",
                         daemon=True).start()

    def _ring(self, loop: asyncio.AbstractEventLoop, title: str, text: str, device: str | None) -> None:
        try:
            shown = self._notify(title, text)
        except Exception:  # a broken bus must not keep the chime from sounding
            log.exception("the desktop notification failed")
            shown = False
        if not shown:
            loop.call_soon_threadsafe(self._fallback, title, text)
        if self._sound is None:
            self._sound = chime()
        self._play(self._sound, device)

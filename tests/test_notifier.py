"""A timer's ring: the chime on a real (PulseAudio) output and a desktop notification over D-Bus.

The notification service is a test double registered as org.freedesktop.Notifications on a
private session bus (a real dbus-daemon); it records each Notify call with its D-Bus
signature, so a wrongly typed argument (`i` for `u`) fails as it would with GNOME's or
KDE's daemon.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from jeepney import HeaderFields, MessageType, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

from gui.notifier import SERVICE, Notifier, chime, notify_desktop, play_on_device
from rig.engine_helpers import is_audible

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(shutil.which("dbus-daemon") is None, reason="needs dbus-daemon (Debian: dbus)")]


@dataclass
class NotificationService:
    """A private session bus, and (once `start`ed) a notification service on it that records calls."""

    address: str
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)  # (signature, body)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        assert ready.wait(5), "the test notification service did not register"

    def _serve(self, ready: threading.Event) -> None:
        with open_dbus_connection(bus=self.address) as connection:
            connection.send_and_get_reply(message_bus.RequestName(SERVICE), timeout=5)
            ready.set()
            while not self._stop.is_set():
                try:
                    message = connection.receive(timeout=0.1)
                except TimeoutError:
                    continue
                if (message.header.message_type is MessageType.method_call
                        and message.header.fields.get(HeaderFields.member) == "Notify"):
                    self.calls.append((message.header.fields.get(HeaderFields.signature), message.body))
                    connection.send(new_method_return(message, "u", (len(self.calls),)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


@pytest.fixture
def session_bus() -> Iterator[NotificationService]:
    """A private dbus-daemon; the service on it is started by the test (or not: no service)."""
    started = subprocess.run(["dbus-daemon", "--session", "--print-address=1", "--print-pid=1", "--fork"],
                             capture_output=True, text=True, timeout=10, check=True)
    address, pid = started.stdout.split()
    service = NotificationService(address)
    try:
        yield service
    finally:
        service.stop()
        os.kill(int(pid), signal.SIGTERM)


def test_a_notification_reaches_the_service_with_the_spec_s_signature(session_bus: NotificationService) -> None:
    session_bus.start()
    assert notify_desktop("Timer", "tea: time is up.", bus=session_bus.address)
    assert session_bus.calls == [("susssasa{sv}i", ("Sandra", 0, "alarm-symbolic", "Timer", "tea: time is up.",
                                                    [], {}, 10000))]


def test_no_service_or_no_bus_is_false_not_an_error(session_bus: NotificationService, tmp_path) -> None:
    assert not notify_desktop("Timer", "up", bus=session_bus.address)  # a bus, nobody serving
    assert not notify_desktop("Timer", "up", bus=f"unix:path={tmp_path / 'no-bus'}")


def test_the_chime_is_short_soft_and_starts_without_a_click() -> None:
    sound = chime()
    assert sound.dtype == np.float32 and 0.5 < len(sound) / 48000 < 1.2
    assert float(np.max(np.abs(sound))) == pytest.approx(0.4, abs=1e-6)
    assert float(np.max(np.abs(sound[:48]))) < 0.1  # the first millisecond ramps up


def test_the_chime_plays_on_the_output_device(pulse) -> None:
    recording = pulse.record_speaker()
    try:
        play_on_device(chime(), "pulse")
    finally:
        heard = recording.stop()
    assert is_audible(heard), "the chime was not heard on the speaker"


async def test_a_ring_notifies_off_the_loop_and_falls_back_without_a_service(
        session_bus: NotificationService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", session_bus.address)
    loop_thread = threading.get_ident()
    played: list[tuple[int, str | None]] = []
    fallbacks: list[tuple[str, str, int]] = []
    notifier = Notifier(lambda: "speaker-1",
                        lambda title, text: fallbacks.append((title, text, threading.get_ident())),
                        play=lambda sound, device: played.append((threading.get_ident(), device)))
    notifier.on_ring("tea")  # nobody serves notifications yet: the fallback says it, on the loop
    for _ in range(100):
        if fallbacks and played:
            break
        await asyncio.sleep(0.05)
    assert fallbacks == [("Timer", "tea: time is up.", loop_thread)]
    assert played and played[0][0] != loop_thread and played[0][1] == "speaker-1"

    session_bus.start()
    notifier.on_ring("")
    for _ in range(100):
        if session_bus.calls and len(played) == 2:
            break
        await asyncio.sleep(0.05)
    assert [body[3:5] for _sig, body in session_bus.calls] == [("Timer", "Your timer is up.")]
    assert len(fallbacks) == 1

"""The send track takes each microphone frame the moment it is complete (core.audio.FrameWakeup),
and keeps a 20 ms rhythm on its own clock when no frame comes (no device clock, a stall)."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time

import numpy as np
import pytest

import core.audio as audio
from base.pcm import FRAME_SECONDS
from core.audio import CaptureTrack, DeviceAudio, FrameWakeup
from core.sound_devices import SoundDevices
from rig.pulse_rig import tone

pytestmark = pytest.mark.timeout(60)


async def test_the_wakeup_is_a_flag_raised_from_any_thread() -> None:
    wakeup = FrameWakeup(asyncio.get_running_loop())
    started = time.monotonic()
    assert not await wakeup.wait(0.05)  # nothing raised: the timeout
    assert time.monotonic() - started >= 0.04
    thread = threading.Timer(0.05, wakeup.notify)
    thread.start()
    started = time.monotonic()
    assert await wakeup.wait(5.0)  # PortAudio's thread raises it: the loop wakes long before the timeout
    assert time.monotonic() - started < 2.0
    wakeup.notify()
    wakeup.notify()
    await asyncio.sleep(0.01)
    assert await wakeup.wait(1.0)
    assert not await wakeup.wait(0.02)  # two frames at once are one wake-up: the ring sheds the rest


async def test_a_frame_goes_when_the_microphone_completes_it_not_on_the_clock(monkeypatch) -> None:
    monkeypatch.setattr(audio, "WAKEUP_SLACK_S", 2.0)  # the clock alone would hold every frame for 2 s
    wakeup = FrameWakeup(asyncio.get_running_loop())
    track = CaptureTrack(lambda: None, wakeup=wakeup)
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    for i in range(5):
        loop.call_later(0.03, wakeup.notify)
        await track.recv()
    assert time.monotonic() - started < 1.0
    assert track.frames_sent == 5


async def test_without_frames_the_track_keeps_its_20_ms_rhythm() -> None:
    track = CaptureTrack(lambda: None, wakeup=FrameWakeup(asyncio.get_running_loop()))
    await track.recv()
    started = time.monotonic()
    for _ in range(25):
        await track.recv()
    elapsed = time.monotonic() - started
    # 25 frames on the clock: 0.5 s (plus the one-frame slack once); waiting out the slack
    # for every frame would take twice as long
    assert 25 * FRAME_SECONDS * 0.9 < elapsed < 25 * FRAME_SECONDS + 0.25, elapsed


async def _frame_waits(devices: SoundDevices, wakeup: FrameWakeup | None, frames: int) -> list[float]:
    """How long each microphone frame waited after its last sample was heard, until the track took it."""
    waits: list[float] = []

    def read() -> np.ndarray | None:
        timed = devices.read_timed_frame()
        if timed is None or timed[0] is None:
            return None
        waits.append(time.monotonic() - (timed[0] + FRAME_SECONDS))
        return timed[1]

    track = CaptureTrack(read, wakeup=wakeup)
    devices.discard()
    while len(waits) < frames:
        await track.recv()
    return waits[5:]


async def test_on_the_rig_frames_wait_less_than_on_the_tracks_clock(pulse) -> None:
    devices = SoundDevices(DeviceAudio(None, None), lambda n, t=None: np.zeros(n, dtype=np.int16),
                           on_level=lambda _db: None, on_problem=lambda _m: None)
    await devices.open()
    player = pulse.play_into_mic(tone(700, 8.0))  # a busy source: an idle null sink runs in 2 s blocks
    try:
        await asyncio.sleep(0.5)
        clock = statistics.median(await _frame_waits(devices, None, 150))
        woken = statistics.median(await _frame_waits(devices, devices.frame_wakeup, 150))
    finally:
        await asyncio.to_thread(player.wait, 15)
        await devices.close()
    # The clock takes a frame 0-20 ms after it is complete (10 ms on average); woken, at once.
    # Both include PortAudio's own delay from the ADC to the callback, the same either way.
    print(f"median wait: clock {1000 * clock:.1f} ms, woken {1000 * woken:.1f} ms")
    assert woken < clock - 0.004, (woken, clock)

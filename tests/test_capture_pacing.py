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
from core.audio import CaptureTrack, FrameWakeup, MicrophoneSource
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
    thread.join()
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
    lags = []  # how far each send is behind its place on a 20 ms grid
    for n in range(1, 111):
        await track.recv()
        lags.append(time.monotonic() - started - n * FRAME_SECONDS)
    # Each frame goes one slack after its due time, and the next is due 20 ms after it: the
    # lag stays put. Counting the next 20 ms from the send instead drifts ~0.5 ms a frame.
    drift = statistics.median(lags[90:]) - statistics.median(lags[:20])
    assert abs(drift) < 0.01, drift


async def test_frames_held_back_go_at_once_then_the_rhythm_resumes() -> None:
    backlog = [np.full(960, k, dtype=np.int16) for k in range(1, 11)]
    track = CaptureTrack(lambda: backlog.pop(0) if backlog else None, held_back=lambda: bool(backlog))
    await track.recv()
    started = time.monotonic()
    burst = [await track.recv() for _ in range(9)]
    assert time.monotonic() - started < 0.05  # the clock alone: 9 x 20 ms
    assert [int(frame.to_ndarray()[0, 0]) for frame in burst] == list(range(2, 11))
    started = time.monotonic()
    for _ in range(5):
        await track.recv()
    assert 0.08 <= time.monotonic() - started < 0.2  # then one frame every 20 ms, not a catch-up burst


class _TimedWakeup(FrameWakeup):
    """Notes when the microphone completed each frame, and what woke the track."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.completed: list[float] = []
        self.woken = self.timed_out = 0

    def notify(self) -> None:
        self.completed.append(time.monotonic())
        super().notify()

    async def wait(self, timeout: float) -> bool:
        raised = await super().wait(timeout)
        if raised:
            self.woken += 1
        else:
            self.timed_out += 1
        return raised


async def test_on_the_rig_each_frame_goes_as_soon_as_the_microphone_completes_it(pulse) -> None:
    wakeup = _TimedWakeup(asyncio.get_running_loop())
    mic = MicrophoneSource(None, on_frame=wakeup.notify)
    waits: list[float] = []

    def read() -> np.ndarray | None:
        timed = mic.read_timed_frame()
        if timed is not None and wakeup.completed:
            waits.append(time.monotonic() - wakeup.completed[-1])
        return None if timed is None else timed[1]

    track = CaptureTrack(read, wakeup=wakeup)
    player = pulse.play_into_mic(tone(700, 5.0))  # a busy source: an idle null sink runs in 2 s blocks
    try:
        await asyncio.sleep(0.5)
        mic.discard()
        for _ in range(150):
            await track.recv()
    finally:
        await asyncio.to_thread(player.wait, 15)
        mic.close()
    # On the track's own clock a frame waits 0-20 ms after it is complete (10 on average);
    # woken by it, only for the loop to come round.
    assert wakeup.woken >= 0.9 * (wakeup.woken + wakeup.timed_out), (wakeup.woken, wakeup.timed_out)
    assert statistics.median(waits) < 0.005, statistics.median(waits)

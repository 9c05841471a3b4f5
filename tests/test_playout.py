"""Playout ring: due frames, concealment, trimming, clear(), first audible, threads."""

from __future__ import annotations

import asyncio
import threading

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from base.pcm import FRAME_SAMPLES, MonoConverter
from core.playout import Playout, play_track

F = FRAME_SAMPLES


def tone(value: int, n: int = F) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


def ramp(start: int, n: int = F) -> np.ndarray:
    return (np.arange(n) + start).astype(np.int16)


def test_frames_play_in_order_as_they_are_due() -> None:
    p = Playout()
    p.write(ramp(0))
    p.write(ramp(F))
    assert np.array_equal(p.read(F), ramp(0))
    assert np.array_equal(p.read(F // 2), ramp(F, F // 2))
    assert np.array_equal(p.read(F // 2), ramp(F + F // 2, F // 2))
    s = p.stats()
    assert s.played == 2 * F and s.concealed == 0 and s.underruns == 0 and s.depth == 0


def test_ring_wraps_around_without_corrupting_audio() -> None:
    p = Playout(capacity_ms=60, max_depth_ms=60)
    expected = []
    got = []
    for i in range(20):
        chunk = ramp(i * 700, 700)
        p.write(chunk)
        expected.append(chunk)
        got.append(p.read(700))
    assert np.array_equal(np.concatenate(got), np.concatenate(expected))


def test_a_missing_frame_is_concealed_by_a_fading_repeat_then_silence() -> None:
    p = Playout(fade_ms=40)
    p.write(tone(10000))
    p.read(F)
    first = p.read(F)
    second = p.read(F)
    third = p.read(F)
    assert first[0] == 10000  # the last frame, repeated
    assert np.all(np.diff(np.concatenate([first, second]).astype(int)) <= 0)  # fading
    assert 0 < abs(int(second[0])) < 10000
    assert not third.any()  # then silence
    s = p.stats()
    assert s.underruns == 3 and s.concealed == 3 * F


def test_a_long_pause_stops_counting_as_gaps() -> None:
    p = Playout(idle_after_ms=100)
    p.write(tone(1000))
    p.read(F)
    for _ in range(50):
        p.read(F)
    assert p.stats().concealed == 100 * 48
    p.write(tone(1000))
    p.read(F)
    p.read(F)
    assert p.stats().concealed == 100 * 48 + F  # active again after real audio


def test_audio_after_an_underrun_is_played_late_not_dropped() -> None:
    p = Playout()
    p.write(ramp(0))
    p.read(F)
    p.read(F)  # underrun
    p.write(ramp(F))
    assert np.array_equal(p.read(F), ramp(F))


def test_a_ring_deeper_than_the_maximum_is_trimmed_oldest_first() -> None:
    p = Playout(max_depth_ms=60)
    for i in range(5):
        p.write(ramp(i * F))
    s = p.stats()
    assert s.depth == 3 * F and s.trimmed == 2 * F
    assert np.array_equal(p.read(F), ramp(2 * F))


def test_a_frame_never_needed_for_a_calm_window_is_shed() -> None:
    p = Playout(calm_s=1.0)
    p.write(tone(5))
    p.write(tone(5))  # one frame more than the clock needs
    for _ in range(60):  # 1.2 s of steady writes and reads
        p.write(tone(5))
        p.read(F)
    s = p.stats()
    assert s.trimmed == 2 * F  # both spare frames: two were left after every read
    assert s.depth == 0


def test_half_a_frame_never_needed_under_10_ms_device_blocks_is_shed() -> None:
    # 20 ms frames drained by 10 ms sound-card blocks: after a hiccup 10 ms stay behind
    # every frame for good. Shedding only whole frames kept them (~10 ms of every round trip).
    p = Playout(calm_s=1.0)
    p.write(tone(5, F // 2))
    for _ in range(60):
        p.write(tone(5))
        p.read(F // 2)
        p.read(F // 2)
    s = p.stats()
    assert s.trimmed == F // 2
    assert s.depth == 0


def test_no_shedding_while_the_spare_frame_is_used() -> None:
    p = Playout(calm_s=1.0)
    p.write(tone(5))
    for i in range(120):
        if i % 10 != 9:  # every tenth write comes late, in a lump
            p.write(tone(5))
        if i % 10 == 0 and i:
            p.write(tone(5))
        p.read(F)
    assert p.stats().trimmed == 0


def test_clear_silences_at_once_and_drops_what_waited() -> None:
    p = Playout()
    for _ in range(4):
        p.write(tone(8000))
    p.read(F)
    p.clear()
    assert not p.read(F).any()  # no repeat of the cut answer either
    s = p.stats()
    assert s.cleared == 3 * F and s.depth == 0


def test_first_audible_reports_the_loud_sample_time_once_per_arming() -> None:
    seen: list[float] = []
    p = Playout(audible_threshold=500, on_first_audible=seen.append, clock=lambda: 50.0)
    quiet_then_loud = np.zeros(F, dtype=np.int16)
    quiet_then_loud[480:] = 2000
    p.write(tone(100))  # below the threshold
    p.write(quiet_then_loud)
    p.write(tone(3000))
    p.read(F, play_time=10.0)
    assert seen == []
    p.read(F, play_time=10.02)
    assert seen == [pytest.approx(10.03)]
    p.read(F)
    assert len(seen) == 1  # not armed again
    p.expect_audio()
    p.write(tone(-3000))
    p.read(F)
    assert seen[1] == pytest.approx(50.0)  # default play time: the clock


def test_concurrent_writer_and_reader_threads_keep_every_sample_in_order() -> None:
    p = Playout(capacity_ms=2000, max_depth_ms=2000, calm_s=100.0)
    total = 400
    got: list[np.ndarray] = []
    done = threading.Event()

    def writer() -> None:
        for i in range(total):
            p.write(ramp((i * 37) % 30000, 37))
        done.set()

    def reader() -> None:
        block = np.empty(50, dtype=np.int16)
        while not done.is_set() or p.stats().depth:
            if p.stats().depth >= 50 or done.is_set():
                n = min(50, p.stats().depth)
                if n:
                    out = block[:n]
                    p.read_into(out)
                    got.append(out.copy())

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    expected = np.concatenate([ramp((i * 37) % 30000, 37) for i in range(total)])
    assert np.array_equal(np.concatenate(got), expected)
    assert p.stats().trimmed == 0


def test_converter_averages_stereo_and_keeps_48k_without_resampling() -> None:
    stereo = np.zeros((1, 2 * F), dtype=np.int16)
    stereo[0, 0::2] = 1000
    stereo[0, 1::2] = 3000
    frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
    frame.sample_rate = 48000
    converter = MonoConverter()
    mono = converter.convert(frame)
    assert len(mono) == F and np.all(mono == 2000)
    assert converter._resampler is None


def test_converter_resamples_other_rates() -> None:
    frame = av.AudioFrame.from_ndarray(np.full((1, 480), 1000, dtype=np.int16),
                                       format="s16", layout="mono")
    frame.sample_rate = 24000
    mono = MonoConverter().convert(frame)
    assert 800 <= len(mono) <= 960
    assert abs(int(mono[len(mono) // 2]) - 1000) < 50


class ListTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, frames: list[av.AudioFrame]) -> None:
        super().__init__()
        self.frames = frames

    async def recv(self) -> av.AudioFrame:
        if not self.frames:
            raise MediaStreamError
        await asyncio.sleep(0)
        return self.frames.pop(0)


@pytest.mark.timeout(10)
async def test_play_track_drains_every_frame_until_the_track_ends() -> None:
    frames = []
    for i in range(30):
        stereo = np.full((1, 2 * F), i, dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = 48000
        frames.append(frame)
    p = Playout(capacity_ms=1000, max_depth_ms=1000)
    await play_track(ListTrack(frames), p)
    assert p.stats().written == 30 * F
    out = p.read(30 * F)
    assert np.array_equal(out[::F], np.arange(30))


@pytest.mark.timeout(20)
def test_first_audible_is_when_the_sample_reaches_the_dac(pulse) -> None:
    """Through a real output stream: the first-audible time is the callback's moment plus
    PortAudio's output latency (outputBufferDacTime), not the hand-over."""
    import time

    from core.audio import SpeakerSink

    reported: list[tuple[float, float]] = []  # (first audible, when reported)
    p = Playout(on_first_audible=lambda at: reported.append((at, time.monotonic())))
    speaker = SpeakerSink(None, p.read)
    aheads = []
    try:
        time.sleep(0.3)
        for _ in range(7):
            reported.clear()
            p.expect_audio()
            p.write(np.full(2 * F, 8000, dtype=np.int16))
            time.sleep(0.2)
            assert len(reported) == 1
            at, handed_over = reported[0]
            aheads.append(at - handed_over)
    finally:
        asyncio.run(speaker.close())
    # after an underrun on a loaded machine the buffer is empty and the DAC time is "now": the median tells
    ahead = float(np.median(aheads))
    assert 0.4 * speaker.latency < ahead < speaker.latency + 0.03, (aheads, speaker.latency)

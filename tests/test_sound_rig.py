"""The rig itself: real sounddevice streams on the virtual PulseAudio devices."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

from base.pcm import FRAME_SAMPLES
from core.audio import MicrophoneSource, SpeakerSink, StreamFormat
from core.playout import Playout
from rig.pulse_rig import RATE, add_native_devices, dominant_frequency, tone

pytestmark = pytest.mark.timeout(60)


def _pulse_device(sd, kind: str) -> int:
    for index, device in enumerate(sd.query_devices()):
        if device["name"] == "pulse" and device[f"max_{kind}_channels"] > 0:
            return index
    raise AssertionError(f"sounddevice lists no pulse {kind} device: {sd.query_devices()}")


def test_tone_into_virtual_mic_reaches_input_stream(pulse):
    import sounddevice as sd

    captured: list[np.ndarray] = []
    with sd.InputStream(device=_pulse_device(sd, "input"), samplerate=RATE, channels=1, dtype="int16",
                        blocksize=960, callback=lambda data, *_: captured.append(data[:, 0].copy())):
        time.sleep(0.3)
        player = pulse.play_into_mic(tone(1000, 1.0))
        player.wait(timeout=10)
        time.sleep(0.5)
    audio = np.concatenate(captured)
    loud = audio[np.abs(audio) > 3000]
    assert len(loud) > RATE * 0.5, "the tone played into the mic was not captured"
    start = int(np.argmax(np.abs(audio) > 3000))
    assert abs(dominant_frequency(audio[start:start + RATE // 2]) - 1000) < 20


def test_output_stream_tone_reaches_speaker_monitor(pulse):
    import sounddevice as sd

    recording = pulse.record_speaker()
    time.sleep(0.3)
    sd.play(tone(440, 1.0), samplerate=RATE, device=_pulse_device(sd, "output"), blocking=True)
    time.sleep(0.5)
    audio = recording.stop()
    loud = np.abs(audio) > 3000
    assert loud.sum() > RATE * 0.5, "the tone played by an output stream was not heard on the monitor"
    start = int(np.argmax(loud))
    assert abs(dominant_frequency(audio[start:start + RATE // 2]) - 440) < 20


# --- the app's own streams: the conversion path, the clock at the ear, the release cut ----------


class _TimedSilence:
    """A pull that plays silence, remembering when it is called and the play_time it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float | None]] = []

    def __call__(self, n: int, play_time: float | None = None) -> np.ndarray:
        self.calls.append((time.monotonic(), play_time))
        return np.zeros(n, np.int16)


def test_a_44k1_stereo_card_carries_a_tone_both_ways(pulse, monkeypatch):
    """A 44.1 kHz stereo microphone and speaker, opened at their own format (PulseAudio
    would accept 48 kHz mono and resample itself, so the test forces the native format
    the way a card that refuses 48 kHz mono is opened): a tone captured through the
    microphone is played back through the speaker, its frequency kept."""
    card = add_native_devices(pulse, 44100, 2, prefix=f"cd{os.getpid() % 1000}")
    monkeypatch.setenv("PULSE_SOURCE", card.mic)
    monkeypatch.setenv("PULSE_SINK", card.speaker)
    native = StreamFormat(44100, 2)
    playout = Playout(capacity_ms=1000, max_depth_ms=600)
    mic = MicrophoneSource(None, fmt=native)
    speaker = SpeakerSink(None, playout.read, fmt=native)
    recording = card.record_speaker()
    try:
        time.sleep(0.3)
        player = card.play_into_mic(tone(700, 1.5, rate=44100))
        end = time.monotonic() + 2.2
        while time.monotonic() < end:  # microphone -> playout -> speaker, frame by frame
            if (frame := mic.read_frame()) is not None:
                playout.write(frame)
            else:
                time.sleep(0.005)
        player.wait(timeout=10)
    finally:
        mic.close()
        asyncio.run(speaker.close())
        heard = recording.stop()
        card.remove()
    loud = np.abs(heard) > 3000
    assert loud.sum() > 44100 * 0.8, f"the tone did not come through ({loud.sum()} loud samples)"
    start = int(np.argmax(loud))
    assert abs(dominant_frequency(heard[start:start + 44100 // 2], rate=44100) - 700) < 15
    assert mic.format == native and speaker.format == native


def test_the_speaker_reports_when_a_block_reaches_the_dac(pulse):
    """play_time is PortAudio's outputBufferDacTime on the monotonic clock: later than
    the callback by about the stream's output latency."""
    pull = _TimedSilence()
    speaker = SpeakerSink(None, pull)
    try:
        time.sleep(1.0)
        latency = speaker.latency
    finally:
        asyncio.run(speaker.close())
    ahead = np.array([play - called for called, play in pull.calls[10:] if play is not None])
    assert len(ahead) > 20
    median = float(np.median(ahead))
    assert 0.5 * latency <= median <= latency + 0.02, (median, latency)


def test_release_hands_out_everything_heard_before_it(pulse):
    """Push-to-talk released mid-tone: the frames read after the release still hold the
    tone up to the release (it was in PortAudio's buffer and the ring), cut there, and
    nothing heard after the release comes out."""
    mic = MicrophoneSource(None)
    player = None
    try:
        time.sleep(0.3)
        mic.discard()  # press
        player = pulse.play_into_mic(tone(1000, 2.0))
        before = []
        started, reads, release = time.monotonic(), 0, None
        while release is None or time.monotonic() < release:
            if (frame := mic.read_frame()) is not None:
                before.append(frame)
                if release is None and np.abs(frame).max() > 3000:
                    release = time.monotonic() + 0.4  # well inside the tone
            reads += 1
            assert time.monotonic() - started < 5, "the tone never arrived"
            time.sleep(max(0.0, started + reads * 0.02 - time.monotonic()))  # the paced track's rhythm
        release = time.monotonic()
        mic.end_capture(release)
        after = []
        while not mic.capture_done() and time.monotonic() < release + 0.5:
            if (frame := mic.read_frame()) is not None:
                after.append(frame)
            time.sleep(0.02)
        while (frame := mic.read_frame()) is not None:
            after.append(frame)
        assert mic.capture_done()
        time.sleep(0.1)
        assert mic.read_frame() is None  # the tone goes on, but after the release it stays out
    finally:
        mic.close()
        if player is not None:
            player.wait(10)  # killing it would break the feeding thread's pipe
    assert after, "nothing was left at the release: the test shows nothing"
    tail = np.concatenate(after)
    assert np.count_nonzero(np.abs(tail) > 3000) > 0, "the tone heard just before the release was lost"
    assert len(tail) <= 8 * FRAME_SAMPLES  # PortAudio's 20 ms and the ring: not a backlog
    assert not tail[-3:].any(), "the last frame is not cut at the release"

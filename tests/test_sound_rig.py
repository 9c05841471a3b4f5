"""The rig itself: real sounddevice streams on the virtual PulseAudio devices."""

from __future__ import annotations

import time

import numpy as np
import pytest

from rig.pulse_rig import RATE, dominant_frequency, tone

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

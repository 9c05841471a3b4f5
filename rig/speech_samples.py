"""Test speech: spoken WAVs made with the espeak-ng command line and sox.

Reusable by any test that needs a real utterance (the server's call tests feed these
to a WebRTC track). The app itself never uses the CLI: it synthesizes through
libespeak-ng (server.realtime.tts).
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np

TOOLS = ("espeak-ng", "sox")


def missing_tools() -> list[str]:
    """The command-line tools this helper needs that are not installed."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def make_speech_wav(text: str, path: Path, rate: int = 48000, voice: str = "en-us", speed: int = 140) -> Path:
    """Speak `text` into a mono int16 WAV at `rate` Hz; returns `path`."""
    raw = path.with_name(path.stem + ".espeak.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text],
                   check=True, capture_output=True)
    # -R: sox dithers its resampled output with a generator seeded from the clock unless told
    # to repeat itself; the same text must give the same samples on every run.
    subprocess.run(["sox", "-R", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(path)],
                   check=True, capture_output=True)
    raw.unlink()
    return path


def read_wav_int16(path: Path) -> tuple[np.ndarray, int]:
    """(samples as mono int16, sample rate) of a 16-bit WAV; stereo is averaged to mono."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * wav.getsampwidth()}-bit audio, expected 16-bit")
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        channels, rate = wav.getnchannels(), wav.getframerate()
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return samples, rate


"""Sound in and out: sounddevice streams, WAV files, and the outgoing WebRTC track.

Everything runs at 48 kHz mono int16 in 20 ms frames (960 samples), the rate and
frame size Opus and aiortc use, so nothing is resampled on the way. PortAudio calls
our callbacks on its own thread; they only copy samples into small preallocated rings
guarded by a lock, never touch the event loop beyond one thread-safe hand-off.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import wave
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import numpy as np

from base.errors import DeviceError
from base.pcm import FRAME_SAMPLES, FRAME_SECONDS, RATE, SILENCE, PacedTrack, level_dbfs

log = logging.getLogger(__name__)


Pull = Callable[[int], np.ndarray]  # n samples wanted -> int16 samples (exactly n)


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    is_input: bool
    is_output: bool
    is_default: bool


def list_devices() -> list[DeviceInfo]:
    """Sound devices as sounddevice sees them; empty (not an error) when PortAudio has none."""
    import sounddevice as sd

    try:
        devices = sd.query_devices()
        default_in, default_out = sd.default.device
    except sd.PortAudioError as exc:
        log.warning("cannot list sound devices: %s", exc)
        return []
    return [
        DeviceInfo(
            name=d["name"],
            is_input=d["max_input_channels"] > 0,
            is_output=d["max_output_channels"] > 0,
            is_default=i in (default_in, default_out),
        )
        for i, d in enumerate(devices)
    ]


class FrameSource(ABC):
    """What the outgoing track sends while the microphone is open."""

    @abstractmethod
    def read_frame(self) -> np.ndarray | None:
        """The next 20 ms of int16 audio, or None when nothing is ready."""

    def discard(self) -> None:
        """Forget what was captured so far (push-to-talk pressed: start fresh)."""

    def failure(self) -> str | None:
        """Why this source stopped working (a device that vanished), or None."""
        return None

    def warning(self) -> str | None:
        """Something the user should check while the source still works, or None."""
        return None

    def close(self) -> None:
        """Release the device or file."""


class SilentSource(FrameSource):
    """Stands in for a microphone that vanished, so the call goes on."""

    def read_frame(self) -> np.ndarray | None:
        return None


class FrameSink(ABC):
    """Where the answer's audio goes: it pulls from the playout stage on its own clock."""

    def failure(self) -> str | None:
        """Why this sink stopped working (a device that vanished), or None."""
        return None

    @abstractmethod
    async def close(self) -> None: ...


# A device whose callback has not run for this long has gone away (PortAudio often
# just stops calling when PulseAudio removes it).
DEVICE_SILENCE_S = 1.5


def _stalled(last_callback: float, what: str) -> str | None:
    if time.monotonic() - last_callback > DEVICE_SILENCE_S:
        return f"The {what} stopped working (was it unplugged?). Pick another in the device list; the call goes on."
    return None


def _start_stream(what: str, device: str | int | None, make: Callable[[], Any]) -> Any:
    """Open and start a sounddevice stream; a device that can't be had is a DeviceError."""
    import sounddevice as sd

    try:
        stream = make()
        stream.start()
    except (sd.PortAudioError, ValueError) as exc:
        raise DeviceError(
            f"The {what} {device or '(default)'} could not be opened ({exc}). "
            "Check that one is connected, or pick another in the device list."
        ) from exc
    return stream


class _FrameRing:
    """A few frames of capture, newest kept: the device clock and the send clock differ
    slightly, and a backlog would only add delay."""

    def __init__(self, frames: int = 6) -> None:
        self._buf = np.zeros((frames, FRAME_SAMPLES), dtype=np.int16)
        self._lock = threading.Lock()
        self._head = 0  # next frame to read
        self._count = 0

    def push(self, samples: np.ndarray) -> None:
        with self._lock:
            slot = (self._head + self._count) % len(self._buf)
            self._buf[slot] = samples
            if self._count == len(self._buf):
                self._head = (self._head + 1) % len(self._buf)
            else:
                self._count += 1

    def pop(self) -> np.ndarray | None:
        with self._lock:
            if not self._count:
                return None
            frame = self._buf[self._head].copy()
            self._head = (self._head + 1) % len(self._buf)
            self._count -= 1
            return frame

    def clear(self) -> None:
        with self._lock:
            self._count = 0


class MicrophoneSource(FrameSource):
    """A sounddevice input stream in 20 ms blocks."""

    def __init__(self, device: str | int | None, on_level: Callable[[float], None] | None = None) -> None:
        import sounddevice as sd

        self._ring = _FrameRing()
        self._on_level = on_level
        self.last_callback = self.last_sound = time.monotonic()
        self.device_error: str | None = None
        self._stream = _start_stream("microphone", device, lambda: sd.InputStream(
            device=device, samplerate=RATE, channels=1, dtype="int16", blocksize=FRAME_SAMPLES,
            callback=self._callback, finished_callback=self._finished,
        ))
        self._closing = False

    def _callback(self, indata: np.ndarray, frames: int, _time, _status) -> None:
        self.last_callback = time.monotonic()
        if indata.any():
            self.last_sound = self.last_callback
        if frames == FRAME_SAMPLES:
            self._ring.push(indata[:, 0])
        if self._on_level is not None:
            self._on_level(level_dbfs(indata[:, 0]))

    def _finished(self) -> None:
        if not getattr(self, "_closing", True):
            self.device_error = "The microphone stopped (was it unplugged?). Pick another in the device list; the call goes on."
            log.warning("input stream finished unexpectedly")

    def read_frame(self) -> np.ndarray | None:
        return self._ring.pop()

    def discard(self) -> None:
        self._ring.clear()

    def failure(self) -> str | None:
        return self.device_error or _stalled(self.last_callback, "microphone")

    def warning(self) -> str | None:
        # A real microphone always hisses a little: exact zeros mean the sound system
        # moved us to a dead source (the mic was unplugged) or the mic is muted.
        if time.monotonic() - self.last_sound > DEVICE_SILENCE_S:
            return ("The microphone sends only digital silence (unplugged or muted?). "
                    "Check it, or pick another in the device list.")
        return None

    def close(self) -> None:
        self._closing = True
        self._stream.stop(ignore_errors=True)
        self._stream.close(ignore_errors=True)


def read_wav(path: Path) -> np.ndarray:
    """A WAV file as int16 mono 48 kHz (mixed down and resampled when it is not)."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except (OSError, wave.Error, EOFError) as exc:
        raise DeviceError(f"Cannot read the WAV file {path}: {exc}") from exc
    if width != 2:
        raise DeviceError(f"{path} is not 16-bit PCM; convert it, e.g. with sox {path} -b 16 out.wav")
    samples = np.frombuffer(raw, dtype="<i2").reshape(-1, channels).mean(axis=1)
    if rate != RATE:
        positions = np.arange(0, len(samples), rate / RATE)
        samples = np.interp(positions, np.arange(len(samples)), samples)
    return samples.astype(np.int16)


def write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())


class WavSource(FrameSource):
    """A WAV file as the microphone: it advances only while frames are read (button held)."""

    def __init__(self, path: Path) -> None:
        self._samples = read_wav(path)
        self._pos = 0
        self.finished = asyncio.Event()

    @property
    def duration(self) -> float:
        return len(self._samples) / RATE

    def read_frame(self) -> np.ndarray | None:
        if self._pos >= len(self._samples):
            self.finished.set()
            return None
        frame = self._samples[self._pos:self._pos + FRAME_SAMPLES]
        self._pos += FRAME_SAMPLES
        if len(frame) < FRAME_SAMPLES:
            frame = np.concatenate([frame, SILENCE[: FRAME_SAMPLES - len(frame)]])
        return frame

    def load(self, path: Path) -> None:
        """The next utterance: a script can speak several turns in one call."""
        self._samples = read_wav(path)
        self._pos = 0
        self.finished.clear()


class SpeakerSink(FrameSink):
    """A sounddevice output stream whose callback pulls from the playout stage."""

    def __init__(self, device: str | int | None, pull: Pull) -> None:
        import sounddevice as sd

        self._pull = pull
        self.last_callback = time.monotonic()
        self._stream = _start_stream("speaker", device, lambda: sd.OutputStream(
            device=device, samplerate=RATE, channels=1, dtype="int16", blocksize=FRAME_SAMPLES,
            latency="low", callback=self._callback,
        ))

    def _callback(self, outdata: np.ndarray, frames: int, _time, _status) -> None:
        self.last_callback = time.monotonic()
        outdata[:, 0] = self._pull(frames)

    def failure(self) -> str | None:
        return _stalled(self.last_callback, "speaker")

    async def close(self) -> None:
        self._stream.stop(ignore_errors=True)
        self._stream.close(ignore_errors=True)


class WavSink(FrameSink):
    """Records the answer to a WAV file, pulling on a 20 ms clock of its own.

    With no path it plays the answer nowhere, but on the same clock, so latency is
    measured the same way."""

    def __init__(self, path: Path | None, pull: Pull) -> None:
        self._path = path
        self._pull = pull
        self._chunks: list[np.ndarray] = []
        self._task = asyncio.get_running_loop().create_task(self._run(), name="wav-sink")

    async def _run(self) -> None:
        started = time.monotonic()
        ticks = 0
        while True:
            samples = self._pull(FRAME_SAMPLES)
            if self._path is not None:
                self._chunks.append(samples.copy())
            ticks += 1
            await asyncio.sleep(max(0.0, started + ticks * FRAME_SECONDS - time.monotonic()))

    def samples(self) -> np.ndarray:
        return np.concatenate(self._chunks) if self._chunks else SILENCE[:0]

    async def close(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        if self._path is not None:
            write_wav(self._path, self.samples())


class CaptureTrack(PacedTrack):
    """The outgoing audio track: 20 ms frames in real time, silence when `read` has none.

    `read` decides what goes out (the engine gates it with push-to-talk and follows
    device changes), so a fresh track per connection attempt never holds a stale device.
    """

    def __init__(self, read: Callable[[], np.ndarray | None]) -> None:
        super().__init__()
        self._read = read

    def next_samples(self) -> np.ndarray:
        samples = self._read()
        return SILENCE if samples is None else samples


class AudioIO(ABC):
    """Where a call's sound comes from and goes to: devices, or files for scripts and tests."""

    @abstractmethod
    def open_source(self, on_level: Callable[[float], None] | None) -> FrameSource: ...

    @abstractmethod
    def open_sink(self, pull: Pull) -> FrameSink: ...


@dataclass
class DeviceAudio(AudioIO):
    input_device: str | int | None = None
    output_device: str | int | None = None

    def open_source(self, on_level: Callable[[float], None] | None) -> FrameSource:
        return MicrophoneSource(self.input_device, on_level)

    def open_sink(self, pull: Pull) -> FrameSink:
        return SpeakerSink(self.output_device, pull)


@dataclass
class FileAudio(AudioIO):
    """A WAV file as the microphone and, optionally, a WAV file as the speaker."""

    input_path: Path
    output_path: Path | None = None
    source: WavSource | None = None
    sink: WavSink | None = None

    def open_source(self, on_level: Callable[[float], None] | None) -> FrameSource:
        self.source = WavSource(self.input_path)
        return self.source

    def open_sink(self, pull: Pull) -> FrameSink:
        self.sink = WavSink(self.output_path, pull)
        return self.sink


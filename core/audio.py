"""Sound in and out: sounddevice streams, WAV files, and the outgoing WebRTC track.

The call runs at 48 kHz mono int16 in 20 ms frames (960 samples), the rate and frame
size Opus and aiortc use. A device is opened at that rate when it accepts it; one that
does not (a 44.1 kHz stereo-only card) is opened at its own rate and channel count and
converted on the fly (soxr's streaming resampler, mono downmix / upmix).

PortAudio calls our callbacks on its own thread; they only convert and copy samples
into small rings guarded by a lock, never touch the event loop beyond one thread-safe
hand-off. Each callback also maps PortAudio's stream clock onto time.monotonic(), so
the capture ring knows when every frame was heard (the push-to-talk release cuts
there) and the playout knows when a sample reaches the DAC (latency at the ear).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import wave
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np

from base.errors import DeviceError
from base.opus import MonoOpusEncoder
from base.pcm import FRAME_SAMPLES, FRAME_SECONDS, RATE, SILENCE, PacedTrack, level_dbfs

log = logging.getLogger(__name__)


class Pull(Protocol):
    """n samples wanted -> int16 mono 48 kHz samples (exactly n); play_time = when the
    first of them reaches the listener's ear, on time.monotonic()'s clock (None: now)."""

    def __call__(self, n: int, play_time: float | None = None, /) -> np.ndarray: ...


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    is_input: bool
    is_output: bool
    is_default: bool


@dataclass(frozen=True)
class StreamFormat:
    """The rate and channel count a device stream is opened with."""

    rate: int
    channels: int


CALL_FORMAT = StreamFormat(RATE, 1)

# PortAudio's own block size (0: the capture ring frames whatever comes) and explicit
# buffering, measured on the PulseAudio rig under load (2 cores, load ~5-8): fixed
# 960-sample blocks cost 40 ms per direction; latency="low" (~9 ms) lost 3 of 4 capture
# blocks of a 44.1 kHz stereo source and gave ~5 output dropouts a second; output at
# 20 ms ~2 dropouts a second, at 30 ms as few as the old 40 ms (0-3 per 5 s; 480-sample
# blocks were no better). Free blocks meant callbacks every ~5 ms, 330 a second for both
# streams: 6.5 % of a core in sounddevice's per-call wrapping alone; 10 ms blocks (at 48 kHz)
# halve the calls, cost 4.6 %, and leave PortAudio's reported latencies where they were.
# Not 20 ms for the microphone, though each callback would then complete a frame (~1 % of a
# core less): PortAudio then stamps each block with an ADC time ~7 ms later than it was
# heard (it assumes 40 ms of latency and delivers in ~13), which put the echo canceller's
# reference out of step and held voice barge-in back by ~1 s (bench hands_free).
BLOCK_SIZE = 480
INPUT_LATENCY = 0.02
OUTPUT_LATENCY = 0.03


class _PortAudio:
    """PortAudio enumerates devices once, when initialised: re-initialising it is the only
    way to see a device plugged in later, and it kills every open stream. This counts
    the streams we hold so a refresh happens only when none is open."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.open_streams = 0

    def refresh(self) -> bool:
        """Re-enumerate the devices if no stream is open; False when it had to wait."""
        import sounddevice as sd

        with self.lock:
            if self.open_streams:
                return False
            sd._terminate()
            sd._initialize()
            log.info("sound device list refreshed")
            return True


_portaudio = _PortAudio()


def refresh_devices() -> bool:
    """Make newly plugged devices visible; only done while no stream is open (returns whether it was)."""
    return _portaudio.refresh()


def list_devices(refresh: bool = False) -> list[DeviceInfo]:
    """Sound devices as sounddevice sees them; empty (not an error) when PortAudio has none.

    refresh: re-enumerate first (so devices that came or went show), when no stream is open."""
    import sounddevice as sd

    if refresh:
        refresh_devices()
    try:
        with _portaudio.lock:
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


@dataclass(frozen=True)
class StreamHealth:
    """What the device watch needs to know about one stream (monotonic times)."""

    opened_at: float
    last_callback: float | None  # None until PortAudio first called back
    ended: bool  # the stream stopped for good (PortAudio finished it, or it never opened)
    last_sound: float | None = None  # a microphone's last block that was not exact zeros


class FrameSource(ABC):
    """What the outgoing track sends while the microphone is open."""

    @abstractmethod
    def read_frame(self) -> np.ndarray | None:
        """The next 20 ms of int16 audio, or None when nothing is ready."""

    def read_timed_frame(self) -> tuple[float | None, np.ndarray] | None:
        """The next frame with when its first sample was heard (None: no device clock)."""
        frame = self.read_frame()
        return None if frame is None else (None, frame)

    def discard(self) -> None:
        """Forget what was captured so far (push-to-talk pressed: start fresh)."""

    def end_capture(self, until: float) -> None:
        """Push-to-talk released at `until` (monotonic): read_frame still hands out what was
        captured before that instant, then nothing until discard()."""

    def capture_done(self) -> bool:
        """After end_capture: everything captured before the release has been read."""
        return True

    def health(self) -> StreamHealth | None:
        """The stream's vital signs, or None when there is nothing to watch (files)."""
        return None

    def close(self) -> None:
        """Release the device or file."""


class SilentSource(FrameSource):
    """Stands in for a microphone being reopened, so the call goes on."""

    def __init__(self) -> None:
        self._since = time.monotonic()

    def read_frame(self) -> np.ndarray | None:
        return None

    def health(self) -> StreamHealth:
        return StreamHealth(self._since, None, ended=True)


class FrameSink(ABC):
    """Where the answer's audio goes: it pulls from the playout stage on its own clock."""

    def health(self) -> StreamHealth | None:
        """The stream's vital signs, or None when there is nothing to watch (files)."""
        return None

    @abstractmethod
    async def close(self) -> None: ...


def _start_stream(what: str, device: str | int | None, make: Callable[[], Any]) -> Any:
    """Open and start a sounddevice stream; a device that can't be had is a DeviceError.

    A named device PortAudio does not know may have been plugged in since it enumerated:
    with no stream of ours open, re-enumerate and try once more."""
    import sounddevice as sd

    for attempt in range(2):
        with _portaudio.lock:
            try:
                stream = make()
                stream.start()
            except (sd.PortAudioError, ValueError) as exc:
                if attempt == 0 and device is not None and _portaudio.refresh():
                    continue
                raise DeviceError(
                    f"The {what} {device or '(default)'} could not be opened ({exc}). "
                    "Check that one is connected, or pick another in the device list."
                ) from exc
            _portaudio.open_streams += 1
            return stream
    raise AssertionError("unreachable")


def _stop_stream(stream: Any) -> None:
    with _portaudio.lock:
        stream.stop(ignore_errors=True)
        stream.close(ignore_errors=True)
        _portaudio.open_streams -= 1


def choose_format(kind: str, device: str | int | None, forced: StreamFormat | None = None) -> StreamFormat:
    """48 kHz mono if the device takes it, else its native rate and (at most 2) channels.

    kind is "input" or "output"; forced skips the question (a device that claims
    48 kHz mono wrongly, and tests of the conversion path)."""
    import sounddevice as sd

    if forced is not None:
        return forced
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    with _portaudio.lock:
        try:
            check(device=device, samplerate=RATE, channels=1, dtype="int16")
            return CALL_FORMAT
        except (sd.PortAudioError, ValueError) as exc:
            if isinstance(exc, sd.PortAudioError) and exc.args[1:2] not in ((_PA_BAD_RATE,), (_PA_BAD_CHANNELS,)):
                return CALL_FORMAT  # not a format refusal (the device is gone): opening it will say so
            try:
                info = sd.query_devices(device, kind)
            except (sd.PortAudioError, ValueError):
                return CALL_FORMAT  # unknown device: let opening it say what is wrong
            native = StreamFormat(int(info["default_samplerate"]), max(1, min(2, int(info[f"max_{kind}_channels"]))))
            log.info("%s %s refuses 48 kHz mono (%s): opening it at %s", kind, device, exc, native)
            return native


_PA_BAD_CHANNELS = -9998  # PortAudio's paInvalidChannelCount
_PA_BAD_RATE = -9997  # paInvalidSampleRate


class StreamClock:
    """Maps one stream's PortAudio stamps (its own clock: the wall clock on Linux) to
    time.monotonic().

    The offset between the clocks is re-measured at every callback, but a callback that
    waited for the GIL reads monotonic late, never early: under load that puts stamps 5-30 ms
    late, which the echo canceller would take for a torn reference. So the smallest offset
    of the last window is the one used; the window lets it follow a step of the wall clock."""

    def __init__(self, window_s: float = 2.0) -> None:
        self._window_s = window_s
        self._offsets: deque[tuple[float, float]] = deque()  # (measured at, offset), offsets rising

    def to_monotonic(self, stamp: float, current: float, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        if not current or not stamp:  # the host API gives no times: "now" is the best guess
            return now
        offset = now - current
        while self._offsets and self._offsets[-1][1] >= offset:
            self._offsets.pop()
        self._offsets.append((now, offset))
        while self._offsets[0][0] < now - self._window_s:
            self._offsets.popleft()
        return stamp + self._offsets[0][1]


class _Downmix:
    """Device input (n, channels) int16 at its rate -> int16 mono 48 kHz."""

    def __init__(self, fmt: StreamFormat) -> None:
        import soxr

        self._fmt = fmt
        self._resampler = (soxr.ResampleStream(fmt.rate, RATE, 1, dtype="int16", quality="MQ")
                           if fmt.rate != RATE else None)

    def convert(self, block: np.ndarray) -> np.ndarray:
        mono = block[:, 0] if self._fmt.channels == 1 else block.mean(axis=1).astype(np.int16)
        if self._resampler is None:
            return mono
        return self._resampler.resample_chunk(np.ascontiguousarray(mono))


class _Upmix:
    """Fills device output blocks (n, channels) at the device's rate from a 48 kHz mono pull."""

    def __init__(self, fmt: StreamFormat, pull: Pull) -> None:
        import soxr

        self._fmt = fmt
        self._pull = pull
        self._resampler = (soxr.ResampleStream(RATE, fmt.rate, 1, dtype="int16", quality="MQ")
                           if fmt.rate != RATE else None)
        self._pending = np.zeros(0, dtype=np.int16)  # resampled, not yet played

    def fill(self, out: np.ndarray, play_time: float | None) -> None:
        n = len(out)
        if self._resampler is None:
            mono = self._pull(n, play_time)
        else:
            mono = self._resampled(n, play_time)
        out[:] = mono[:, None]

    def _resampled(self, n: int, play_time: float | None) -> np.ndarray:
        assert self._resampler is not None
        parts = [self._pending]
        have = len(self._pending)
        for _ in range(8):  # the resampler holds back its filter delay at first
            if have >= n:
                break
            want = max(FRAME_SAMPLES // 4, int(np.ceil((n - have) * RATE / self._fmt.rate)))
            at = None if play_time is None else play_time + have / self._fmt.rate
            chunk = self._resampler.resample_chunk(np.ascontiguousarray(self._pull(want, at)))
            parts.append(chunk)
            have += len(chunk)
        joined = np.concatenate(parts)
        if len(joined) < n:
            joined = np.concatenate([joined, np.zeros(n - len(joined), dtype=np.int16)])
        self._pending = joined[n:].copy()
        return joined[:n]


QUIET_DBFS = -50.0  # a frame this quiet carries no speech: it may be dropped to cut delay


class _CaptureRing:
    """Captured audio as 20 ms frames, each stamped with when its first sample was heard.

    A few frames are kept, newest kept: the device clock and the send clock differ
    slightly, and a backlog would only add delay. After end_capture(until), frames that
    started before `until` still come out (the part after `until` zeroed), later ones
    are dropped, and the partial frame is flushed once the device has caught up."""

    def __init__(self, frames: int = 6, calm_reads: int = 50) -> None:
        self._frames: deque[tuple[float, np.ndarray]] = deque(maxlen=frames)
        # backlog shedding: the fewest frames left waiting over calm_reads reads (~1 s)
        self._calm_reads = calm_reads
        self._reads = 0
        self._calm_min = frames
        self._lock = threading.Lock()
        self._partial = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self._fill = 0
        self._partial_at = 0.0
        self._captured_until = -np.inf  # when the newest sample pushed was heard
        self._cutoff: float | None = None

    @property
    def depth(self) -> int:
        """Whole frames waiting."""
        with self._lock:
            return len(self._frames)

    def push(self, samples: np.ndarray, end_time: float) -> int:
        """samples (int16 mono 48 kHz) whose last one was heard at end_time (monotonic);
        returns how many whole frames they completed."""
        n = len(samples)
        completed = 0
        with self._lock:
            start = end_time - n / RATE
            self._captured_until = end_time
            if self._cutoff is not None:  # released: what was heard afterwards is not this turn's
                n = min(n, max(0, int(round((self._cutoff - start) * RATE))))
            pos = 0
            while pos < n:
                if self._fill == 0:
                    self._partial_at = start + pos / RATE
                take = min(n - pos, FRAME_SAMPLES - self._fill)
                self._partial[self._fill:self._fill + take] = samples[pos:pos + take]
                self._fill += take
                pos += take
                if self._fill == FRAME_SAMPLES:
                    self._frames.append((self._partial_at, self._partial.copy()))
                    self._fill = 0
                    completed += 1
            self._flush_partial()
        return completed

    def _flush_partial(self) -> None:
        if self._cutoff is not None and self._fill and self._captured_until >= self._cutoff:
            self._partial[self._fill:] = 0
            self._frames.append((self._partial_at, self._partial.copy()))
            self._fill = 0

    def pop(self) -> tuple[float, np.ndarray] | None:
        """The oldest frame and when its first sample was heard."""
        with self._lock:
            if self._cutoff is None:
                self._shed_backlog()
            if not self._frames:
                return None
            started, frame = self._frames.popleft()
            if self._cutoff is None:
                return started, frame
            if started >= self._cutoff:
                self._frames.clear()
                return None
            keep = int(round((self._cutoff - started) * RATE))
            frame[max(0, keep):] = 0
            return started, frame

    def _shed_backlog(self) -> None:
        """Frames that stayed waiting through a whole calm window were never needed as a
        cushion, only delay (the ring filled before reading began, or after a stall):
        drop all but one of them, but only quiet ones, never a word."""
        self._calm_min = min(self._calm_min, len(self._frames))
        self._reads += 1
        if self._reads >= self._calm_reads:
            for _ in range(self._calm_min - 1):
                if level_dbfs(self._frames[0][1]) > QUIET_DBFS:
                    break
                self._frames.popleft()
            self._reads, self._calm_min = 0, self._frames.maxlen or 0

    def end_capture(self, until: float) -> None:
        with self._lock:
            self._cutoff = until
            self._flush_partial()

    def capture_done(self) -> bool:
        with self._lock:
            if self._cutoff is None:
                return True
            return self._captured_until >= self._cutoff and not any(t < self._cutoff for t, _ in self._frames)

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._fill = 0
            self._cutoff = None


# No callback for this long: the stream has stalled (device suspended or gone); the
# device watch then tries reopening it. PulseAudio null sinks left idle run in ~2 s
# blocks, so one stall alone never means "unplugged".
STALL_S = 1.5


class MicrophoneSource(FrameSource):
    """A sounddevice input stream feeding the capture ring with 48 kHz mono."""

    def __init__(self, device: str | int | None, on_block: Callable[[np.ndarray], None] | None = None,
                 fmt: StreamFormat | None = None, on_frame: Callable[[], None] | None = None) -> None:
        import sounddevice as sd

        self.format = choose_format("input", device, fmt)
        self._convert = _Downmix(self.format)
        self._ring = _CaptureRing()
        self._clock = StreamClock()
        self._on_block = on_block
        self._on_frame = on_frame
        self.opened_at = time.monotonic()
        self.last_sound: float | None = None
        self.last_callback: float | None = None
        self.ended = False
        self._closing = False
        self._stream = _start_stream("microphone", device, lambda: sd.InputStream(
            device=device, samplerate=self.format.rate, channels=self.format.channels, dtype="int16",
            blocksize=BLOCK_SIZE, latency=INPUT_LATENCY, callback=self._callback,
            finished_callback=self._finished,
        ))

    @property
    def latency(self) -> float:
        """PortAudio's input latency in seconds."""
        return float(self._stream.latency)

    @property
    def ring_depth(self) -> int:
        """Whole 20 ms frames waiting in the capture ring."""
        return self._ring.depth

    def _callback(self, indata: np.ndarray, frames: int, times: Any, _status: Any) -> None:
        self.last_callback = time.monotonic()
        heard_end = self._clock.to_monotonic(times.inputBufferAdcTime, times.currentTime) + frames / self.format.rate
        mono = self._convert.convert(indata)
        if mono.any():
            self.last_sound = self.last_callback
        completed = self._ring.push(mono, heard_end)
        if self._on_block is not None:
            self._on_block(mono)
        if completed and self._on_frame is not None:
            self._on_frame()

    def _finished(self) -> None:
        if not self._closing:
            self.ended = True
            log.warning("input stream finished unexpectedly")

    def read_frame(self) -> np.ndarray | None:
        timed = self._ring.pop()
        return None if timed is None else timed[1]

    def read_timed_frame(self) -> tuple[float | None, np.ndarray] | None:
        return self._ring.pop()

    def discard(self) -> None:
        self._ring.clear()

    def end_capture(self, until: float) -> None:
        self._ring.end_capture(until)

    def capture_done(self) -> bool:
        return self._ring.capture_done()

    def health(self) -> StreamHealth:
        return StreamHealth(self.opened_at, self.last_callback, self.ended, self.last_sound)

    def close(self) -> None:
        self._closing = True
        _stop_stream(self._stream)


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
    """A sounddevice output stream whose callback pulls from the playout stage, telling
    it when each block will reach the DAC (PortAudio's outputBufferDacTime)."""

    def __init__(self, device: str | int | None, pull: Pull, fmt: StreamFormat | None = None) -> None:
        import sounddevice as sd

        self.format = choose_format("output", device, fmt)
        self._upmix = _Upmix(self.format, pull)
        self._clock = StreamClock()
        self.opened_at = time.monotonic()
        self.last_callback: float | None = None
        self.ended = False
        self._closing = False
        self._stream = _start_stream("speaker", device, lambda: sd.OutputStream(
            device=device, samplerate=self.format.rate, channels=self.format.channels, dtype="int16",
            blocksize=BLOCK_SIZE, latency=OUTPUT_LATENCY, callback=self._callback,
            finished_callback=self._finished,
        ))

    @property
    def latency(self) -> float:
        """PortAudio's output latency in seconds."""
        return float(self._stream.latency)

    def _callback(self, outdata: np.ndarray, frames: int, times: Any, _status: Any) -> None:
        self.last_callback = time.monotonic()
        self._upmix.fill(outdata, self._clock.to_monotonic(times.outputBufferDacTime, times.currentTime))

    def _finished(self) -> None:
        if not self._closing:
            self.ended = True
            log.warning("output stream finished unexpectedly")

    def health(self) -> StreamHealth:
        return StreamHealth(self.opened_at, self.last_callback, self.ended)

    async def close(self) -> None:
        self._closing = True
        await asyncio.to_thread(_stop_stream, self._stream)


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


class SilentSink(WavSink):
    """Stands in for a speaker being reopened: plays nowhere, keeps the playout clock running."""

    def __init__(self, pull: Pull) -> None:
        super().__init__(None, pull)
        self._since = time.monotonic()

    def health(self) -> StreamHealth:
        return StreamHealth(self._since, None, ended=True)


# A microphone frame later than its clock time by this much is not coming (a stall, a
# reopening, a file): the track's own 20 ms clock sends meanwhile. A whole frame, so a
# frame that is merely late (scheduling under load) is never replaced by silence.
WAKEUP_SLACK_S = FRAME_SECONDS


class FrameWakeup:
    """A whole microphone frame is waiting: raised on PortAudio's thread, awaited on the loop.

    A flag, not a count: frames completed together send one now and leave the rest to the
    capture ring's backlog shedding, as a clock would."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._raised = False
        self._waiter: asyncio.Future[None] | None = None

    def notify(self) -> None:
        """Any thread."""
        try:
            self._loop.call_soon_threadsafe(self._raise)
        except RuntimeError:  # the loop closed under a stream that is still stopping
            pass

    def _raise(self) -> None:
        self._raised = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, timeout: float) -> bool:
        """True once raised (and lowered again), False after `timeout` seconds without."""
        if not self._raised:
            waiter = self._waiter = self._loop.create_future()
            timer = self._loop.call_later(timeout, lambda: waiter.done() or waiter.set_result(None))
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        raised, self._raised = self._raised, False
        return raised


class CaptureTrack(PacedTrack):
    """The outgoing audio track: 20 ms frames in real time, silence when `read` has none.

    `read` decides what goes out (the engine gates it with push-to-talk and follows
    device changes), so a fresh track per connection attempt never holds a stale device.
    With `opus` the track hands the sender mono Opus packets it encoded itself
    (base/opus.py); only for a transceiver that negotiates nothing but Opus. With a
    `wakeup` each frame goes the moment the microphone completes it instead of on the
    next tick of the track's clock (~10 ms sooner on average). While `held_back()` is true,
    `read` has frames it held back (the user's first words over an answer): they go at
    once, one after another.
    """

    def __init__(self, read: Callable[[], np.ndarray | None], *, opus: bool = False,
                 wakeup: FrameWakeup | None = None, held_back: Callable[[], bool] | None = None) -> None:
        super().__init__()
        self._read = read
        self._encoder = MonoOpusEncoder() if opus else None
        self._wakeup = wakeup
        self._held_back = held_back

    async def wait_for_next(self) -> None:
        if self._held_back is not None and self._held_back():
            self.restart_clock(time.monotonic())  # the clock resumes after them
            return
        if self._wakeup is None:
            await super().wait_for_next()
            return
        now = time.monotonic()
        # Due + slack, not (time to due) + slack: on the clock alone each frame goes a slack
        # after its due time, and the next is due 20 ms after that one, not after the send.
        if await self._wakeup.wait(max(0.0, self.clock_due(now) + WAKEUP_SLACK_S - now)):
            self.restart_clock(time.monotonic())  # the device's frames set the pace; the clock follows them

    def next_samples(self) -> np.ndarray:
        samples = self._read()
        return SILENCE if samples is None else samples

    def package(self, frame: av.AudioFrame) -> av.AudioFrame | av.Packet:
        return frame if self._encoder is None else self._encoder.encode(frame)


class AudioIO(ABC):
    """Where a call's sound comes from and goes to: devices, or files for scripts and tests."""

    # Opening may block (PortAudio talks to the sound server): then it runs off the loop.
    # Files open at once, and their clocks are tasks on the loop.
    opens_blocking = True

    @abstractmethod
    def open_source(self, on_block: Callable[[np.ndarray], None] | None,
                    on_frame: Callable[[], None] | None = None) -> FrameSource:
        """on_block: each captured block (int16 mono, PortAudio's thread), e.g. for a level meter;
        on_frame: a whole frame is ready to read (PortAudio's thread; sources with no device
        clock never call it)."""

    @abstractmethod
    def open_sink(self, pull: Pull) -> FrameSink: ...


@dataclass
class DeviceAudio(AudioIO):
    """Sound devices by name or index (None: the system default).

    input_format / output_format force the stream format instead of asking the device
    (for a device that claims 48 kHz mono wrongly, and for tests of the conversion)."""

    input_device: str | int | None = None
    output_device: str | int | None = None
    input_format: StreamFormat | None = None
    output_format: StreamFormat | None = None

    def open_source(self, on_block: Callable[[np.ndarray], None] | None,
                    on_frame: Callable[[], None] | None = None) -> FrameSource:
        return MicrophoneSource(self.input_device, on_block, self.input_format, on_frame)

    def open_sink(self, pull: Pull) -> FrameSink:
        return SpeakerSink(self.output_device, pull, self.output_format)


@dataclass
class FileAudio(AudioIO):
    """A WAV file as the microphone and, optionally, a WAV file as the speaker."""

    opens_blocking = False

    input_path: Path
    output_path: Path | None = None
    source: WavSource | None = None
    sink: WavSink | None = None

    def open_source(self, on_block: Callable[[np.ndarray], None] | None,
                    on_frame: Callable[[], None] | None = None) -> FrameSource:
        self.source = WavSource(self.input_path)
        return self.source

    def open_sink(self, pull: Pull) -> FrameSink:
        self.sink = WavSink(self.output_path, pull)
        return self.sink


"""48 kHz mono int16 in 20 ms frames: the one PCM shape both ends of a call use.

Opus and aiortc work at 48 kHz in 20 ms frames, so nothing is resampled on the way
unless a device or a peer insists on something else (then MonoConverter does it).
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import math
import time

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger(__name__)

RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
FRAME_SECONDS = FRAME_SAMPLES / RATE
TIME_BASE = fractions.Fraction(1, RATE)
SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)
# A loop stalled longer than this restarts the pacing clock instead of bursting to catch up.
_MAX_LAG_S = 5 * FRAME_SECONDS


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS (-inf for digital silence)."""
    if samples.size == 0:
        return -math.inf
    rms = math.sqrt(float(np.mean(np.square(samples, dtype=np.float64))))
    return 20 * math.log10(rms / 32768) if rms > 0 else -math.inf


def pcm_frame(samples: np.ndarray, pts: int) -> av.AudioFrame:
    """int16 mono samples as a 48 kHz frame starting at `pts` (in samples)."""
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = RATE
    frame.pts = pts
    frame.time_base = TIME_BASE
    return frame


def split_frames(pcm: np.ndarray) -> list[np.ndarray]:
    """int16 mono samples → 20 ms frames, the last one padded with silence."""
    pcm = np.asarray(pcm, dtype=np.int16).reshape(-1)
    padded = (-len(pcm)) % FRAME_SAMPLES
    if padded:
        pcm = np.concatenate([pcm, SILENCE[:padded]])
    return list(pcm.reshape(-1, FRAME_SAMPLES))


class MonoConverter:
    """Decoded frames to int16 mono 48 kHz, without resampling what already is."""

    def __init__(self) -> None:
        self._sum = np.zeros(5760, dtype=np.int32)
        self._mono = np.zeros(5760, dtype=np.int16)
        self._resampler: av.AudioResampler | None = None

    def convert(self, frame: av.AudioFrame) -> np.ndarray:
        """int16 mono samples of frame; the array is reused by the next call."""
        channels = len(frame.layout.channels)
        if frame.format.name != "s16" or frame.sample_rate != RATE or channels > 2:
            return self._resample(frame)
        n = frame.samples
        packed = np.frombuffer(frame.planes[0], dtype=np.int16, count=n * channels)
        if channels == 1:
            return packed
        if n > len(self._sum):
            self._sum = np.zeros(n, dtype=np.int32)
            self._mono = np.zeros(n, dtype=np.int16)
        total = self._sum[:n]
        np.add(packed[0::2], packed[1::2], out=total, dtype=np.int32)
        np.right_shift(total, 1, out=total)
        mono = self._mono[:n]
        mono[:] = total
        return mono

    def _resample(self, frame: av.AudioFrame) -> np.ndarray:
        if self._resampler is None:
            log.info("resampling %s %d Hz audio to s16 mono 48 kHz", frame.format.name, frame.sample_rate)
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        chunks = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(chunks) if chunks else self._mono[:0]


class PacedTrack(MediaStreamTrack):
    """An outgoing audio track of 20 ms frames on a real-time clock.

    Subclasses say what the next frame holds (`next_samples`) and may wait differently
    (`wait_for_next`); the base keeps the clock, the timestamps and the frame count.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._pts = 0
        self.frames_sent = 0

    def next_samples(self) -> np.ndarray:
        raise NotImplementedError

    def clock_due(self, now: float) -> float:
        """When the next frame is due on the clock (monotonic); a clock that lags far
        behind `now` (a stalled loop) restarts there instead of bursting to catch up."""
        if self._start is None or now - (self._start + self._pts / RATE) > _MAX_LAG_S:
            self.restart_clock(now)
        assert self._start is not None
        return self._start + self._pts / RATE

    def restart_clock(self, now: float) -> None:
        """The next frame is due `now`, and the following ones every 20 ms after it."""
        self._start = now - self._pts / RATE

    async def wait_for_next(self) -> None:
        """Sleep until the next frame is due on the clock."""
        now = time.monotonic()
        await asyncio.sleep(max(0.0, self.clock_due(now) - now))

    async def recv(self) -> av.AudioFrame | av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        await self.wait_for_next()
        if self.readyState != "live":
            raise MediaStreamError
        out = self.package(pcm_frame(self.next_samples(), self._pts))
        self._pts += FRAME_SAMPLES
        self.frames_sent += 1
        return out

    def package(self, frame: av.AudioFrame) -> av.AudioFrame | av.Packet:
        """What the sender is handed: the frame, for aiortc to encode (or a packet encoded here)."""
        return frame

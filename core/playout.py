"""Time-driven playout after track.recv(): a small ring that the sound card's clock pulls.

aiortc pushes decoded frames, as packets happen to arrive, into an unbounded queue
behind ``track.recv()``; nothing there knows about time. ``play_track`` drains that
queue as fast as frames come (so it never grows) into a ``Playout`` ring, and the
sound device's callback (or a virtual clock for files and tests) pulls 20 ms blocks
from it with ``read_into``/``read``. The ring smooths arrival jitter, conceals a
missing frame (the last 20 ms repeated under a fade, then silence), sheds latency it
provably does not need, and can be emptied at once for barge-in.

Writer (asyncio loop) and reader (PortAudio's thread) share the ring under one lock
held only for small copies; the first-audible callback runs on the reader's thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from base.pcm import FRAME_SAMPLES, RATE, MonoConverter

log = logging.getLogger(__name__)

# Unused audio is shed in 10 ms steps (a sound-card block), not whole 20 ms frames: 20 ms
# frames drained by 10 ms blocks can leave 10 ms behind every frame for good
# (bench: the playout's mean depth in the device round trip 22 -> 16 ms).
SHED_STEP = FRAME_SAMPLES // 2


@dataclass(frozen=True)
class PlayoutStats:
    """Counters in samples (divide by FRAME_SAMPLES for 20 ms frames)."""

    written: int
    played: int  # real audio handed to the device
    concealed: int  # filled in while the stream was active (repeat-fade or silence)
    trimmed: int  # dropped to cut latency
    cleared: int  # dropped by clear()
    underruns: int  # reads that found less audio than asked for
    depth: int  # samples waiting now


class Playout:
    """Bounded int16 mono 48 kHz ring between the network and the sound card."""

    def __init__(
        self,
        *,
        capacity_ms: int = 320,
        max_depth_ms: int = 160,
        # A frame unused for a whole calm window is dropped. Under the bench's 0-30 ms
        # jitter and 1 % loss each way (bench/engine_echo.py, two runs each): 1 s gave
        # gaps 0.11/0.16 % at a round trip of 82/83 ms, 2 s 0.29/0.23 % at 91/95 ms.
        calm_s: float = 1.0,
        fade_ms: int = 40,
        idle_after_ms: int = 200,
        audible_threshold: int = 500,
        clock: Callable[[], float] = time.monotonic,
        on_first_audible: Optional[Callable[[float], None]] = None,
    ) -> None:
        # What the speaker was handed and when its first sample sounds (the echo canceller's
        # far end); set by whoever cancels echo, called on the reader's thread.
        self.on_played: Optional[Callable[[np.ndarray, float], None]] = None
        self._capacity = capacity_ms * RATE // 1000
        self._max_depth = min(self._capacity, max_depth_ms * RATE // 1000)
        self._calm_samples = int(calm_s * RATE)
        self._fade = np.linspace(1.0, 0.0, fade_ms * RATE // 1000, endpoint=False)
        self._idle_after = idle_after_ms * RATE // 1000
        self._threshold = audible_threshold
        self._clock = clock
        self._on_first_audible = on_first_audible
        self._lock = threading.Lock()
        self._ring = np.zeros(self._capacity, dtype=np.int16)
        self._start = 0  # index of the oldest waiting sample
        self._size = 0
        self._last = np.zeros(FRAME_SAMPLES, dtype=np.int16)  # last real 20 ms played
        self._gap_run = 0  # samples filled in since the last real sample
        self._active = False  # real audio flowed recently: fill-ins count as gaps
        self._armed = True
        # latency shedding: the least audio left after a read over a calm window
        self._calm_min = self._capacity
        self._calm_read = 0
        self._written = self._played = self._concealed = 0
        self._trimmed = self._cleared = self._underruns = 0

    def stats(self) -> PlayoutStats:
        with self._lock:
            return PlayoutStats(
                written=self._written,
                played=self._played,
                concealed=self._concealed,
                trimmed=self._trimmed,
                cleared=self._cleared,
                underruns=self._underruns,
                depth=self._size,
            )

    def expect_audio(self) -> None:
        """Report the next audible sample through on_first_audible (once)."""
        self._armed = True

    def clear(self) -> None:
        """Barge-in: drop everything waiting; the next read is silence."""
        with self._lock:
            self._cleared += self._size
            self._size = 0
            self._gap_run = len(self._fade)  # no repeat of the cut answer
            self._active = False

    def write(self, samples: np.ndarray) -> None:
        """Append int16 mono 48 kHz samples (copied); trims beyond max depth."""
        n = len(samples)
        with self._lock:
            self._written += n
            if n > self._capacity:
                self._trimmed += n - self._capacity
                samples = samples[n - self._capacity :]
                n = self._capacity
            end = (self._start + self._size) % self._capacity
            first = min(n, self._capacity - end)
            self._ring[end : end + first] = samples[:first]
            self._ring[: n - first] = samples[first:]
            self._size += n
            excess = self._size - self._max_depth
            if excess > 0:
                self._drop(excess)

    def _drop(self, n: int) -> None:
        n = min(n, self._size)
        self._trimmed += n
        self._start = (self._start + n) % self._capacity
        self._size -= n

    def read(self, n_frames: int, play_time: Optional[float] = None) -> np.ndarray:
        """The next n_frames samples (allocates; the device callback uses read_into)."""
        out = np.empty(n_frames, dtype=np.int16)
        self.read_into(out, play_time)
        return out

    def read_into(self, out: np.ndarray, play_time: Optional[float] = None) -> None:
        """Fill out (int16, 1-D) with what is due now; play_time = when out[0] sounds."""
        n = len(out)
        audible_at: Optional[int] = None
        with self._lock:
            k = min(n, self._size)
            first = min(k, self._capacity - self._start)
            out[:first] = self._ring[self._start : self._start + first]
            out[first:k] = self._ring[: k - first]
            self._start = (self._start + k) % self._capacity
            self._size -= k
            if k:
                self._played += k
                self._gap_run = 0
                self._active = True
                self._remember(out[:k])
                if self._armed:
                    loud = np.flatnonzero(np.abs(out[:k].astype(np.int32)) > self._threshold)
                    if len(loud):
                        audible_at = int(loud[0])
                        self._armed = False
            if k < n:
                self._conceal(out[k:])
            self._shed_latency(n)
        if audible_at is not None and self._on_first_audible is not None:
            start = self._clock() if play_time is None else play_time
            self._on_first_audible(start + audible_at / RATE)
        if play_time is not None and self.on_played is not None:
            self.on_played(out, play_time)

    def _remember(self, played: np.ndarray) -> None:
        k = len(played)
        if k >= FRAME_SAMPLES:
            self._last[:] = played[k - FRAME_SAMPLES :]
        else:
            self._last[: FRAME_SAMPLES - k] = self._last[k:]
            self._last[FRAME_SAMPLES - k :] = played

    def _conceal(self, gap: np.ndarray) -> None:
        m = len(gap)
        start = self._gap_run
        fade_len = len(self._fade)
        faded = max(0, min(m, fade_len - start))
        if faded:
            index = np.arange(start, start + faded) % FRAME_SAMPLES
            gap[:faded] = self._last[index] * self._fade[start : start + faded]
        gap[faded:] = 0
        if self._active:
            self._underruns += 1
            self._concealed += max(0, min(m, self._idle_after - start))
            if start + m >= self._idle_after:
                self._active = False  # a pause in the stream, not a gap
        self._gap_run = start + m

    def _shed_latency(self, n: int) -> None:
        """Drop the audio (in SHED_STEPs) that stayed unused through a calm window."""
        self._calm_min = min(self._calm_min, self._size if self._active else 0)
        self._calm_read += n
        if self._calm_read >= self._calm_samples:
            unused = self._calm_min // SHED_STEP * SHED_STEP
            if unused:
                self._drop(unused)
            self._calm_min = self._capacity
            self._calm_read = 0


async def play_track(track: MediaStreamTrack, playout: Playout,
                     accept: Callable[[], bool] = lambda: True) -> None:
    """Move every frame of track into playout as soon as it is decoded, until it ends.

    A frame arriving while `accept()` is False is dropped (a cut answer still in flight).
    """
    converter = MonoConverter()
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            log.debug("remote audio track ended")
            return
        if accept():
            playout.write(converter.convert(frame))

"""The server's outgoing audio track: 20 ms Opus-ready frames, silence when idle
(or, quiet, nothing at all when idle).

Two pacings:
- CLOCK (assistant): a whole answer is queued at once and sent on a real-time 20 ms
  clock, so the caller receives it at speaking speed.
- PASS_THROUGH (echo): each frame handed in goes out on the next recv() at once, no
  added buffering; silence only fills a gap longer than a few frames. A frame lost on
  the way in (its timestamp skipped) is sent as silence ahead of the next one, so the
  echo keeps every 20 ms slot, as a provider's output does, instead of passing the
  hole on for the caller to conceal.
Barge-in is clear(): the queue is emptied, so the next frame sent is silence.

Quiet (`serve --quiet-audio`): recv() blocks while nothing is queued, so aiortc's
sender sends no RTP between answers, as a provider with DTX or audio only while
speaking does. RTP timestamps stay contiguous across the pause (the sender pauses).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
from dataclasses import dataclass, field

import numpy as np

from base.pcm import FRAME_SAMPLES, RATE, SILENCE, PacedTrack, split_frames

log = logging.getLogger(__name__)

FRAME_S = FRAME_SAMPLES / RATE
# Echo: a late frame is waited for this long before silence is sent in its place.
_PASS_THROUGH_GAP_S = 3 * FRAME_S
# Echo: more queued than this means the sender outruns us; keep the newest.
_PASS_THROUGH_MAX_FRAMES = 5


class Pacing(enum.Enum):
    CLOCK = "clock"
    PASS_THROUGH = "pass_through"


@dataclass(eq=False)  # identity semantics: clear() collects playbacks in a set
class Playback:
    """One answer's audio on its way out; the futures tell when it began and ended."""

    frames: int
    started: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    # True when every frame was sent, False when clear() cut it.
    finished: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    sent: int = 0


class OutputTrack(PacedTrack):
    def __init__(self, pacing: Pacing, *, quiet: bool = False) -> None:
        super().__init__()
        self._pacing = pacing
        self._quiet = quiet
        self._queue: collections.deque[tuple[np.ndarray, Playback | None]] = collections.deque()
        self._arrived = asyncio.Event()
        self._next_pts: int | None = None  # echo: the input timestamp expected next

    def play(self, pcm: np.ndarray) -> Playback:
        """Queue an answer; returns its Playback (an empty answer finishes at once)."""
        frames = split_frames(pcm)
        playback = Playback(len(frames))
        if not frames:
            playback.started.set_result(None)
            playback.finished.set_result(True)
        for frame in frames:
            self._queue.append((frame, playback))
        self._arrived.set()
        return playback

    def push(self, samples: np.ndarray, pts: int | None = None) -> None:
        """Echo: received audio (one or more 20 ms frames starting at input timestamp
        `pts`, in samples), to be sent as soon as possible."""
        frames = split_frames(samples)
        if pts is not None:
            lost = 0 if self._next_pts is None else (pts - self._next_pts) // FRAME_SAMPLES
            self._next_pts = pts + len(frames) * FRAME_SAMPLES
            # A larger jump is a paused or restarted sender, not a loss to stand in for.
            if 0 < lost <= _PASS_THROUGH_MAX_FRAMES:
                frames = [SILENCE] * lost + frames
        for frame in frames:
            if len(self._queue) >= _PASS_THROUGH_MAX_FRAMES:
                self._queue.popleft()
            self._queue.append((frame, None))
        self._arrived.set()

    def clear(self) -> bool:
        """Drop all queued audio now; True if an answer was playing or waiting."""
        cut = {playback for _, playback in self._queue if playback is not None}
        self._queue.clear()
        for playback in cut:
            if not playback.started.done():
                playback.started.set_result(None)
            if not playback.finished.done():
                playback.finished.set_result(False)
        return bool(cut)

    @property
    def busy(self) -> bool:
        return any(playback is not None for _, playback in self._queue)

    def stop(self) -> None:
        self.clear()
        super().stop()
        self._arrived.set()  # wakes a quiet recv(), which then sees the track ended

    async def wait_for_next(self) -> None:
        if self._quiet:
            await self._wait_for_audio()
        if self._pacing is Pacing.CLOCK:
            await super().wait_for_next()
        else:
            await self._wait_for_frame()

    async def _wait_for_audio(self) -> None:
        """Quiet: until something is queued (or the track stops)."""
        while not self._queue and self.readyState == "live":
            self._arrived.clear()
            await self._arrived.wait()

    async def _wait_for_frame(self) -> None:
        if self._queue:
            return
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), _PASS_THROUGH_GAP_S)
        except asyncio.TimeoutError:
            pass

    def next_samples(self) -> np.ndarray:
        if not self._queue:
            return SILENCE
        samples, playback = self._queue.popleft()
        if playback is not None:
            if not playback.started.done():
                playback.started.set_result(None)
            playback.sent += 1
            if playback.sent == playback.frames and not playback.finished.done():
                playback.finished.set_result(True)
        return samples

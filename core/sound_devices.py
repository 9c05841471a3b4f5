"""The call's microphone and speaker while the call runs: opened once, watched, swapped.

A device that vanishes mid-call is a message, not a crash: a microphone whose callbacks
stop is replaced by a silent stand-in, a dead speaker by a sink that keeps the playout
clock running, and the call goes on until the user picks another device. A microphone
that delivers only exact digital silence is worth one warning (unplugged or muted).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import numpy as np

from core.audio import AudioIO, FrameSink, FrameSource, Pull, SilentSource, WavSink

LEVEL_EVERY_S = 0.08  # input level hand-overs to the loop: ~12 a second is plenty for a meter
WATCH_EVERY_S = 0.5


class SoundDevices:
    def __init__(self, audio: AudioIO, pull: Pull, *, on_level: Callable[[float], None],
                 on_problem: Callable[[str], None]) -> None:
        self.audio = audio
        self._pull = pull
        self._on_level = on_level
        self._on_problem = on_problem
        self._source: FrameSource | None = None
        self._sink: FrameSink | None = None
        self._watch: asyncio.Task | None = None

    @property
    def is_open(self) -> bool:
        return self._source is not None

    async def open(self) -> None:
        """Open both devices (DeviceError says which one cannot be had)."""
        if self._source is not None:
            return
        loop = asyncio.get_running_loop()
        last_level = [0.0]

        def level(dbfs: float) -> None:  # PortAudio's thread: hand over a few times a second
            now = time.monotonic()
            if now - last_level[0] >= LEVEL_EVERY_S:
                last_level[0] = now
                loop.call_soon_threadsafe(self._on_level, dbfs if math.isfinite(dbfs) else -120.0)

        self._source = await asyncio.to_thread(self.audio.open_source, level)
        self._sink = self.audio.open_sink(self._pull)
        self._watch = loop.create_task(self._watch_devices(), name="device-watch")

    async def switch(self, audio: AudioIO) -> None:
        """Use other devices from now on; reopened at once if they were open."""
        was_open = self.is_open
        await self.close()
        self.audio = audio
        if was_open:
            await self.open()

    def read_frame(self) -> np.ndarray | None:
        return self._source.read_frame() if self._source is not None else None

    def discard(self) -> None:
        if self._source is not None:
            self._source.discard()

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            try:
                await self._watch
            except asyncio.CancelledError:
                pass
            self._watch = None
        if self._source is not None:
            self._source.close()
            self._source = None
        if self._sink is not None:
            await self._sink.close()
            self._sink = None

    async def _watch_devices(self) -> None:
        warned: FrameSource | None = None
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            if self._source is not None and self._source is not warned and (warning := self._source.warning()):
                warned = self._source  # once per device: it may be muted on purpose
                self._on_problem(warning)
            if self._source is not None and (problem := self._source.failure()):
                broken, self._source = self._source, SilentSource()
                self._on_problem(problem)
                await asyncio.to_thread(broken.close)
            if self._sink is not None and (problem := self._sink.failure()):
                broken_sink, self._sink = self._sink, WavSink(None, self._pull)
                self._on_problem(problem)
                await broken_sink.close()

"""The call's microphone and speaker while the call runs: opened, watched, reopened, swapped.

A device that stalls or vanishes mid-call is not the end of the call: a stream whose
callbacks stop is reopened with backoff (0.5, 1, 2, 4 s …) while a silent stand-in
keeps the call going (a dead speaker's stand-in keeps the playout clock running). One
stall is normal (PulseAudio suspends, idle null sinks run in ~2 s blocks), so the user
hears about it only when the device has stayed broken for TELL_AFTER_S, and hears
again when it works (on_recovered), so the window can clear its banner.

A saved device that is missing when the call starts falls back to the default one
with a notice. A microphone that delivers only exact digital silence is worth one
warning (unplugged or muted) and, while nobody talks, a reopen now and then: the sound
server moves a stream whose source vanished to another source and never moves it
back, while a new stream goes to the default source, the replugged one once it is back.

API for the engine/window:
- ``on_problem(message)``: non-fatal, show in the banner.
- ``on_recovered(message)``: the device reported through on_problem works again; clear
  the banner (message says which device, e.g. "The microphone works again.").
- ``read_frame()`` while the push-to-talk gate is open; at release call
  ``await finish_capture(release_time)`` while STILL reading frames, then commit:
  the frames captured before release_time (ring and PortAudio buffer) go out first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeVar

import numpy as np

from base.errors import DeviceError
from base.pcm import level_dbfs
from core.audio import (STALL_S, AudioIO, DeviceAudio, FrameSink, FrameSource, FrameWakeup, Pull, SilentSink,
                        SilentSource, StreamHealth)

log = logging.getLogger(__name__)

T = TypeVar("T")

LEVEL_EVERY_S = 0.08  # input level hand-overs to the loop: ~12 a second is plenty for a meter
WATCH_EVERY_S = 0.25
TELL_AFTER_S = 3.0
REOPEN_DELAYS_S = (0.5, 1.0, 2.0, 4.0)  # the last one repeats
CAPTURE_FLUSH_TIMEOUT_S = 0.5  # PortAudio's input buffer + the ring, with room for a slow callback
READING_S = 0.2  # read_frame called this recently: the gate is open, someone is talking


class Device(Enum):
    MICROPHONE = "microphone"
    SPEAKER = "speaker"


@dataclass(frozen=True)
class Decision:
    reopen: bool = False
    tell: str | None = None  # a message for on_problem
    recovered: str | None = None  # a message for on_recovered


@dataclass
class Recovery:
    """When to reopen one device stream and when to tell the user: a pure policy, time passed in.

    Healthy means PortAudio called back within stall_s. A fresh stream that has not
    called back yet gets stall_s of grace (a slow first callback is no failure).
    Unhealthy: reopen at once, then after each delay in turn (the last repeats); tell
    once it has been unhealthy for tell_after_s; say it recovered only if told."""

    device: Device
    stall_s: float = STALL_S
    tell_after_s: float = TELL_AFTER_S
    delays: Sequence[float] = REOPEN_DELAYS_S
    failing_since: float | None = field(default=None, init=False)
    next_reopen: float = field(default=0.0, init=False)
    attempts: int = field(default=0, init=False)
    told: bool = field(default=False, init=False)

    def update(self, now: float, health: StreamHealth) -> Decision:
        if self._healthy(now, health):
            was_told = self.told
            self.failing_since, self.attempts, self.told = None, 0, False
            return Decision(recovered=f"The {self.device.value} works again." if was_told else None)
        if self.failing_since is None:
            if not health.ended and health.last_callback is None and now - health.opened_at <= self.stall_s:
                return Decision()  # still waiting for a slow first callback
            # broken since it last called back: a stall of tell_after_s is told, however it is noticed
            self.failing_since = health.last_callback if health.last_callback is not None else now
            self.next_reopen = now
            log.info("%s stream stalled or ended: reopening it", self.device.value)
        reopen = now >= self.next_reopen
        if reopen:
            self.next_reopen = now + self.delays[min(self.attempts, len(self.delays) - 1)]
            self.attempts += 1
        tell = None
        if not self.told and now - self.failing_since >= self.tell_after_s:
            self.told = True
            tell = (f"The {self.device.value} stopped working (unplugged, or taken by another program?). "
                    "Sandra keeps trying to reopen it; you can also pick another in the device list.")
        return Decision(reopen=reopen, tell=tell)

    def _healthy(self, now: float, health: StreamHealth) -> bool:
        return (not health.ended and health.last_callback is not None
                and now - health.last_callback <= self.stall_s)


# Exact digital silence this long while nobody reads the microphone: reopen it now and
# then. The sound server moves a stream whose source vanished to another (often dead)
# source and never moves it back; a new stream goes to the default source, which is
# the replugged device once it is back.
SILENCE_REOPEN_S = 3.0
SILENCE_REOPEN_EVERY_S = 4.0


@dataclass
class SilenceWatch:
    """A real microphone always hisses a little: exact zeros mean the stream was moved to
    a dead source (the mic was unplugged) or the mic is muted. Warn once, say when sound
    is back, and reopen while the gate is closed (never mid-turn). Pure: time passed in."""

    warn_after_s: float = STALL_S
    reopen_after_s: float = SILENCE_REOPEN_S
    reopen_every_s: float = SILENCE_REOPEN_EVERY_S
    warned: bool = field(default=False, init=False)
    next_reopen: float = field(default=0.0, init=False)

    def update(self, now: float, health: StreamHealth, reading: bool) -> Decision:
        if health.ended or health.last_callback is None:
            return Decision()  # not delivering at all: Recovery's business
        if health.last_sound is not None and now - health.last_sound <= self.warn_after_s:
            was_warned, self.warned = self.warned, False
            return Decision(recovered="The microphone hears sound again." if was_warned else None)
        silent_for = now - (health.last_sound if health.last_sound is not None else health.opened_at)
        if silent_for <= self.warn_after_s:
            return Decision()
        tell = None
        if not self.warned:
            self.warned = True
            tell = ("The microphone sends only digital silence (unplugged or muted?). "
                    "Check it, or pick another in the device list.")
        reopen = not reading and silent_for >= self.reopen_after_s and now >= self.next_reopen
        if reopen:
            self.next_reopen = now + self.reopen_every_s
        return Decision(reopen=reopen, tell=tell)


class SoundDevices:
    def __init__(self, audio: AudioIO, pull: Pull, *, on_level: Callable[[float], None],
                 on_problem: Callable[[str], None], on_recovered: Callable[[str], None] | None = None,
                 make_recovery: Callable[[Device], Recovery] = Recovery) -> None:
        self.audio = audio
        self._pull = pull
        self._on_level = on_level
        self._on_problem = on_problem
        self._on_recovered = on_recovered or (lambda _message: None)
        self._make_recovery = make_recovery
        self._level: Callable[[np.ndarray], None] | None = None
        self._wakeup: FrameWakeup | None = None
        self._source: FrameSource | None = None
        self._sink: FrameSink | None = None
        self._watch: asyncio.Task | None = None
        self._last_read = -math.inf

    @property
    def is_open(self) -> bool:
        return self._source is not None

    @property
    def source(self) -> FrameSource | None:
        return self._source

    @property
    def sink(self) -> FrameSink | None:
        return self._sink

    @property
    def frame_wakeup(self) -> FrameWakeup | None:
        """Raised whenever the microphone (this one or a reopened one) completes a frame."""
        return self._wakeup

    async def open(self) -> None:
        """Open both devices (DeviceError says which one cannot be had, even by default)."""
        if self._source is not None:
            return
        loop = asyncio.get_running_loop()
        last_level = [0.0]

        def level(block: np.ndarray) -> None:  # PortAudio's thread: measured and handed over a few times a second
            now = time.monotonic()
            if now - last_level[0] >= LEVEL_EVERY_S:
                last_level[0] = now
                dbfs = level_dbfs(block)
                loop.call_soon_threadsafe(self._on_level, dbfs if math.isfinite(dbfs) else -120.0)

        self._level = level
        if self._wakeup is None:
            self._wakeup = FrameWakeup(loop)
        self._source = await self._open_with_fallback(Device.MICROPHONE, self._open_source)
        try:
            self._sink = await self._open_with_fallback(Device.SPEAKER, self._open_sink)
        except DeviceError:
            await asyncio.to_thread(self._source.close)
            self._source = None
            raise
        self._watch = loop.create_task(self._watch_devices(), name="device-watch")

    async def _open_with_fallback(self, device: Device, open_device: Callable[[], Awaitable[T]]) -> T:
        """A saved device that is missing now: the default one, with a notice."""
        try:
            return await open_device()
        except DeviceError as exc:
            audio = self.audio
            field_name = "input_device" if device is Device.MICROPHONE else "output_device"
            saved = getattr(audio, field_name, None)
            if not isinstance(audio, DeviceAudio) or saved is None:
                raise
            log.warning("saved %s %r cannot be opened (%s): using the default", device.value, saved, exc)
            self.audio = dataclasses.replace(audio, **{field_name: None})
            opened = await open_device()
            self._on_problem(f"The {device.value} {saved!r} is not available; using the default "
                             f"{device.value}. Pick another in the device list if needed.")
            return opened

    async def _open_source(self) -> FrameSource:
        notify = None if self._wakeup is None else self._wakeup.notify
        if not self.audio.opens_blocking:
            return self.audio.open_source(self._level, notify)
        return await asyncio.to_thread(self.audio.open_source, self._level, notify)

    async def _open_sink(self) -> FrameSink:
        if not self.audio.opens_blocking:
            return self.audio.open_sink(self._pull)
        return await asyncio.to_thread(self.audio.open_sink, self._pull)

    async def switch(self, audio: AudioIO) -> None:
        """Use other devices from now on; reopened at once if they were open."""
        was_open = self.is_open
        await self.close()
        self.audio = audio
        if was_open:
            await self.open()

    def read_frame(self) -> np.ndarray | None:
        timed = self.read_timed_frame()
        return None if timed is None else timed[1]

    def read_timed_frame(self) -> tuple[float | None, np.ndarray] | None:
        """The next microphone frame and when it was heard (None: no device clock)."""
        self._last_read = time.monotonic()
        return self._source.read_timed_frame() if self._source is not None else None

    def discard(self) -> None:
        if self._source is not None:
            self._source.discard()

    async def finish_capture(self, until: float, timeout: float = CAPTURE_FLUSH_TIMEOUT_S) -> bool:
        """Push-to-talk released at `until` (time.monotonic()): keep calling read_frame
        meanwhile; returns once every frame captured before `until` (still in PortAudio's
        buffer or the ring) has been read, True, or after timeout, False. read_frame
        then returns None until discard()."""
        source = self._source
        if source is None:
            return True
        source.end_capture(until)
        deadline = time.monotonic() + timeout
        while not source.capture_done():
            if time.monotonic() >= deadline or source is not self._source:
                return False
            await asyncio.sleep(0.005)
        return True

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            try:
                await self._watch
            except asyncio.CancelledError:
                pass
            self._watch = None
        if self._source is not None:
            await asyncio.to_thread(self._source.close)
            self._source = None
        if self._sink is not None:
            await self._sink.close()
            self._sink = None

    async def _watch_devices(self) -> None:
        recoveries = {device: self._make_recovery(device) for device in Device}
        silence = SilenceWatch()
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            for device, recovery in recoveries.items():
                current = self._source if device is Device.MICROPHONE else self._sink
                health = current.health() if current is not None else None
                if health is None:
                    continue
                now = time.monotonic()
                decisions = [recovery.update(now, health)]
                if device is Device.MICROPHONE:
                    decisions.append(silence.update(now, health, reading=now - self._last_read < READING_S))
                if any(d.reopen for d in decisions):
                    await self._reopen(device)
                for decision in decisions:
                    if decision.tell:
                        self._on_problem(decision.tell)
                    if decision.recovered:
                        self._on_recovered(decision.recovered)

    async def _reopen(self, device: Device) -> None:
        """Replace the stream with a stand-in, close it, and open the device afresh; a
        device that cannot be had yet leaves the stand-in (it reports ended)."""
        try:
            if device is Device.MICROPHONE:
                assert self._source is not None
                broken, self._source = self._source, SilentSource()
                await asyncio.to_thread(broken.close)
                self._source = await self._open_source()
            else:
                assert self._sink is not None
                broken_sink, self._sink = self._sink, SilentSink(self._pull)
                await broken_sink.close()
                fresh = await self._open_sink()
                stand_in, self._sink = self._sink, fresh
                await stand_in.close()
        except DeviceError as exc:
            log.info("reopening the %s failed: %s", device.value, exc)
            return
        log.info("%s reopened", device.value)

"""Helpers for engine tests: a WAV microphone, settings pointing at a provider, event capture."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from core.audio import FileAudio
from core.call.state import Phase
from core.config import Settings
from core.call.engine import EngineOptions
from core.call.events import EngineEvent, StateChanged
from rig.pulse_rig import tone, write_wav


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def custom_settings(base_url: str, **overrides) -> Settings:
    return Settings(**{"provider": "custom", "base_url": base_url, **overrides})


def tone_audio(tmp_path: Path, seconds: float = 0.5) -> FileAudio:
    return FileAudio(write_wav(tmp_path / "tone.wav", tone(440, seconds)), None)


class Observable(Protocol):
    """A CallEngine, or the window's ThreadedEngine (which delivers on the window's loop)."""

    def subscribe(self, observer: Callable[[EngineEvent], None]) -> Callable[[], None]: ...


class Recorder:
    """Collects every engine event, and lets a test wait for one."""

    def __init__(self, engine: Observable) -> None:
        self.events: list[EngineEvent] = []
        self._changed = asyncio.Event()
        engine.subscribe(self._on_event)

    def _on_event(self, event: EngineEvent) -> None:
        self.events.append(event)
        self._changed.set()

    def states(self) -> list:
        return [e.state for e in self.events if isinstance(e, StateChanged)]

    def phases(self) -> list[Phase]:
        return [s.phase for s in self.states()]

    async def wait_for(self, predicate, timeout: float, since: int = 0) -> EngineEvent:
        """The first event from position `since` on that matches (events are values: two
        AssistantSpeaking(False) are equal, so a position, not `events.index`, tells them apart)."""
        deadline = asyncio.get_running_loop().time() + timeout
        seen = since
        while True:
            for event in self.events[seen:]:
                if predicate(event):
                    return event
            seen = len(self.events)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"timed out; events so far: {self.events[-20:]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def wait_phase(self, phase: Phase, timeout: float) -> StateChanged:
        return await self.wait_for(lambda e: isinstance(e, StateChanged) and e.state.phase is phase, timeout)

    async def wait_connected_again(self, timeout: float) -> None:
        """Until the call is connected once more than it has been so far."""
        before = self.phases().count(Phase.CONNECTED)
        await self.wait_for(lambda _e: self.phases().count(Phase.CONNECTED) > before, timeout)


def is_audible(samples: np.ndarray, threshold: int = 1000) -> bool:
    return bool(np.count_nonzero(np.abs(samples.astype(np.int32)) > threshold) > 960)


def engine_options(**overrides) -> EngineOptions:
    """The shipped defaults (timeouts, liveness) with only what a test names changed."""
    return EngineOptions(**overrides)

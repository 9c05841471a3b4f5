"""What the app-level benchmarks borrow from the test rig, and how they drive an engine.

The real server launcher and the PulseAudio rig live in rig/, which the tests use
too, so a figure and a test exercise the same set-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from core.audio import AudioIO
from core.call.state import Phase
from core.config import Settings
from core.call.engine import CallEngine, EngineOptions
from core.call.events import EngineEvent, StateChanged
from core.providers import Provider


from rig.pulse_rig import PulseRig  # noqa: E402
from rig.server_process import ROOT, TEST_SERVER_KEY, ServerProcess, private_env, start_server  # noqa: E402

__all__ = ["ROOT", "PhaseWatch", "PulseRig", "ServerProcess", "engine_for", "private_env", "start_server"]


def engine_for(server: ServerProcess, audio: AudioIO, *, options: EngineOptions | None = None,
               provider_wrapper: Callable[[Provider], Provider] | None = None) -> CallEngine:
    """A CallEngine calling `server` as a custom provider; no transcript lands in anyone's data."""
    options = options or EngineOptions()
    options.save_transcript = False
    return CallEngine(Settings(provider="custom", base_url=server.base_url), audio=audio, api_key=TEST_SERVER_KEY,
                      options=options, provider_wrapper=provider_wrapper)


class PhaseWatch:
    """Waits for the engine's next entry into a phase and says when it happened."""

    def __init__(self, engine: CallEngine) -> None:
        self._entered: dict[Phase, list[float]] = {}
        self._changed = asyncio.Event()
        engine.subscribe(self._on_event)

    def _on_event(self, event: EngineEvent) -> None:
        if isinstance(event, StateChanged):
            self._entered.setdefault(event.state.phase, []).append(asyncio.get_running_loop().time())
            self._changed.set()

    def count(self, phase: Phase) -> int:
        return len(self._entered.get(phase, ()))

    async def entered(self, phase: Phase, after: int, timeout: float) -> float:
        """Loop time of the engine's (after+1)-th entry into `phase`; TimeoutError if it does not come."""
        async with asyncio.timeout(timeout):
            while self.count(phase) <= after:
                self._changed.clear()
                await self._changed.wait()
        return self._entered[phase][after]

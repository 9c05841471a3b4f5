"""Click echo through the app's own engine and local server: echo_rtt_ms, jitter_echo_rtt_ms, jitter_gap_pct.

The microphone is a ClickSource (a 10 ms 1 kHz click once a second, silence between)
read by the engine's real CaptureTrack; the speaker is a ClockSink that pulls the
engine's playout stage every 10 ms, as the app's output stream does, and notes when the click's
first loud sample is played. The far end is `python main.py serve --mode echo`.
Under jitter the call goes through bench.jitter_relay.JitterRelay (0-30 ms delay,
1 % loss of RTP each way, seeded per run), put between the peers with the engine's
provider_wrapper. The gap figure is the share of playout slots after the
warm-up that the playout stage had to conceal, minus the share the relay dropped on the
way back (JitterRelay.unfillable_gap_pct). A drop on the way to the server is not
subtracted: the echo server passes each frame on as it arrives and sends silence in
the place of one lost on the way, so such a drop reaches the caller as a late pair of
frames rather than a hole (5 % loss on that leg alone: 0.3-0.9 % concealed). The way
there's jitter and holds reach the caller on top of the way back's: the caller's
buffer measures a p95 transit spread of 45-130 ms (over 50 packets) under the relay's
0-30 ms. The drops per direction are figures too: jitter_drop_pct_to_server,
jitter_drop_pct_to_client.

    python -m bench.engine_echo [--quick]
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.figures import Figures, cli, figures_from
from bench.jitter_relay import JitterRelay
from bench.rig import PhaseWatch, ServerProcess, engine_for, start_server
from base.pcm import FRAME_SAMPLES, RATE
from core.audio import BLOCK_SIZE, AudioIO, FrameSink, FrameSource, Pull, WavSink
from core.call.state import Phase
from core.providers import EphemeralKey, Provider

log = logging.getLogger(__name__)

CLICK_EVERY_FRAMES = 50  # one click a second: each echo is back long before the next leaves
CLICK_THRESHOLD = 3000  # the click peaks at 16000; Opus never makes silence this loud
WARMUP_S = 1.0  # connection start-up and the first buffer decisions are not measured
CONNECT_TIMEOUT_S = 15.0


class ClickProbe:
    """Shared by the microphone and the speaker: when each click left, when each came back."""

    def __init__(self) -> None:
        self.sent: list[float] = []
        self.heard: list[float] = []
        self.armed = False

    def round_trips_ms(self, since: float) -> list[float]:
        """Each heard click against the newest click sent before it, for clicks sent after `since`."""
        rtts = []
        for heard in self.heard:
            before = [s for s in self.sent if s <= heard]
            if before and before[-1] >= since:
                rtts.append((heard - before[-1]) * 1000.0)
        return rtts


class ClickSource(FrameSource):
    def __init__(self, probe: ClickProbe) -> None:
        self._probe = probe
        self._index = 0
        t = np.arange(FRAME_SAMPLES // 2) / RATE
        self._click = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self._click[: len(t)] = (16000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)

    def read_frame(self) -> np.ndarray | None:
        # Called by the engine's outgoing track at the moment the frame is sent.
        self._index += 1
        if self._index % CLICK_EVERY_FRAMES:
            return None  # the track sends silence
        self._probe.sent.append(time.monotonic())
        self._probe.armed = True
        return self._click


class ClockSink(WavSink):
    """A virtual sound card that detects the click's return: it pulls the playout stage in
    blocks of the app's real output stream (core.audio.BLOCK_SIZE, 10 ms), recording nothing."""

    def __init__(self, probe: ClickProbe, pull: Pull) -> None:
        self._probe = probe
        self.slots = 0
        super().__init__(None, pull)

    async def _run(self) -> None:
        step = BLOCK_SIZE / RATE
        started = time.monotonic()
        while True:
            played_at = time.monotonic()
            block = self._pull(BLOCK_SIZE)
            self.slots += 1
            if self._probe.armed:
                loud = np.flatnonzero(np.abs(block.astype(np.int32)) > CLICK_THRESHOLD)
                if len(loud):
                    self._probe.heard.append(played_at + loud[0] / RATE)
                    self._probe.armed = False
            await asyncio.sleep(max(0.0, started + self.slots * step - time.monotonic()))


class ClickAudio(AudioIO):
    opens_blocking = False  # its clock is a task on the loop

    def __init__(self) -> None:
        self.probe = ClickProbe()
        self.sink: ClockSink | None = None

    def open_source(self, on_block: Callable[[np.ndarray], None] | None,
                    on_frame: Callable[[], None] | None = None) -> FrameSource:
        return ClickSource(self.probe)  # no device clock: the track's own clock paces it

    def open_sink(self, pull: Pull) -> FrameSink:
        self.sink = ClockSink(self.probe, pull)
        return self.sink


class RelayedProvider:
    """A provider whose SDP exchange is rewritten through a jitter relay (the engine's provider_wrapper)."""

    def __init__(self, inner: Provider, relay: JitterRelay) -> None:
        self._inner = inner
        self._relay = relay

    def __getattr__(self, name: str) -> Any:  # label, is_loopback, create_ephemeral_key
        return getattr(self._inner, name)

    async def exchange_sdp(self, http: Any, key: EphemeralKey, offer_sdp: str) -> str:
        answer = await self._inner.exchange_sdp(http, key, await self._relay.rewrite(offer_sdp, "a"))
        return await self._relay.rewrite(answer, "b")


async def echo_through_engine(server: ServerProcess, seconds: float,
                              relay: JitterRelay | None = None) -> tuple[list[float], float]:
    """One call of `seconds`: (click round trips in ms after the warm-up, gap % the buffer caused).

    The relay, when given, has its per-direction counts in relay.stats afterwards."""
    audio = ClickAudio()
    wrapper = None if relay is None else (lambda provider: RelayedProvider(provider, relay))
    engine = engine_for(server, audio, provider_wrapper=wrapper)
    watch = PhaseWatch(engine)
    try:
        await engine.start()
        await watch.entered(Phase.CONNECTED, 0, CONNECT_TIMEOUT_S)
        engine.press()  # the gate stays open: every click goes out
        await asyncio.sleep(WARMUP_S)
        measured_from = time.monotonic()
        assert audio.sink is not None
        slots0, concealed0 = audio.sink.slots, engine.playout_stats().concealed
        await asyncio.sleep(seconds - WARMUP_S)
        slots = audio.sink.slots - slots0
        concealed = engine.playout_stats().concealed - concealed0
    finally:
        await engine.close()
    dropped_pct = 0.0 if relay is None else relay.unfillable_gap_pct(far_end_fills_losses=True)
    gap_pct = 100.0 * concealed / max(1, slots * BLOCK_SIZE) - dropped_pct
    return audio.probe.round_trips_ms(measured_from), gap_pct


async def measure(quick: bool) -> Figures:
    runs = 3 if quick else 5
    seconds = 5.0 if quick else 9.0
    samples: dict[str, list[float]] = {"echo_rtt_ms": [], "jitter_echo_rtt_ms": [], "jitter_gap_pct": [],
                                       "jitter_drop_pct_to_server": [], "jitter_drop_pct_to_client": []}
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), "--mode", "echo")
        try:
            for run in range(runs):
                clean, _ = await echo_through_engine(server, seconds)
                async with JitterRelay(seed=run + 1, lifetime_s=seconds + 30.0) as relay:
                    jittered, gap = await echo_through_engine(server, seconds, relay)
                # The engine offers ("a"), the server answers ("b"); stats are keyed by receiver.
                samples["jitter_drop_pct_to_server"].append(100.0 * relay.stats["b"].drop_share)
                samples["jitter_drop_pct_to_client"].append(100.0 * relay.stats["a"].drop_share)
                log.info("run %d: clean %s, jitter %s, gap %.2f%%", run, [round(r) for r in clean],
                         [round(r) for r in jittered], gap)
                if clean:
                    samples["echo_rtt_ms"].append(statistics.median(clean))
                if jittered:
                    samples["jitter_echo_rtt_ms"].append(statistics.median(jittered))
                samples["jitter_gap_pct"].append(gap)
        finally:
            server.stop()
    return figures_from(samples)


def run(quick: bool = False) -> Figures:
    return asyncio.run(measure(quick))


def main(argv: list[str] | None = None) -> int:
    return cli("python -m bench.engine_echo", __doc__ or "", run, "3 runs of 5 s instead of 5 of 9 s", argv, log)


if __name__ == "__main__":
    sys.exit(main())

"""Audio latency benchmarks: click echo round trip, with and without the jitter relay.

A caller sends a 10 ms click once a second through a real aiortc peer connection on
127.0.0.1 to an echo peer, which sends every frame straight back. The caller plays what
returns through core.playout.Playout, pulled every 20 ms by a virtual sound-card clock;
the round trip runs from the moment the click's frame left the caller's track to the
moment its first loud sample is played. Each figure is measured with the adaptive
buffer (both ends) and with aiortc's stock buffer (``…_plain_aiortc``) in the same run.

    python -m bench.audio_latency [--quick] [--json]

The far end is anything with ``answer(offer_sdp) -> answer_sdp`` and ``close()``
(``AnswerPeer``): today bench.echo_peer.EchoPeer; the local server in echo mode
(``python main.py serve --mode echo``) fits the same slot through an HTTP POST of the
offer to its ``/v1/realtime/calls``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional, Protocol

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtp import RtpPacket

from bench.echo_peer import EchoPeer
from bench.figures import Figures, figures_from, print_table
from bench.jitter_relay import JitterRelay
from base.loopback_ice import acquire_loopback_only, release_loopback_only
from base.jitter_buffer import AdaptiveJitterBuffer, JitterStats, hook_adaptive_jitter_buffer
from base.pcm import FRAME_SAMPLES, RATE
from core.playout import Playout, play_track

log = logging.getLogger(__name__)

_CLICK_THRESHOLD = 3000
_WARMUP_S = 1.0
_CONNECT_TIMEOUT_S = 10.0


class AnswerPeer(Protocol):
    """The far end of a benchmark call."""

    # Whether it sends audio in place of a frame that never reached it, so a loss on
    # the way to it leaves no hole in the echo (JitterRelay.unfillable_gap_pct).
    fills_losses: bool

    async def answer(self, offer_sdp: str) -> str: ...

    async def close(self) -> None: ...


class ClickSource(MediaStreamTrack):
    """Real-time paced 20 ms frames of silence with a 10 ms 1 kHz click every interval."""

    kind = "audio"

    def __init__(self, interval_s: float, on_click: Callable[[float], None]) -> None:
        super().__init__()
        self._every = max(1, round(interval_s * RATE / FRAME_SAMPLES))
        self._on_click = on_click
        self._start: Optional[float] = None
        self._index = 0
        t = np.arange(FRAME_SAMPLES // 2) / RATE
        click = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        click[: len(t)] = (16000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
        self._click = click.reshape(1, -1)
        self._silence = np.zeros((1, FRAME_SAMPLES), dtype=np.int16)

    async def recv(self) -> av.AudioFrame:
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._index += 1
            wait = self._start + self._index * FRAME_SAMPLES / RATE - now
            if wait > 0:
                await asyncio.sleep(wait)
        is_click = self._index % self._every == self._every - 1
        frame = av.AudioFrame.from_ndarray(
            self._click if is_click else self._silence, format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._index * FRAME_SAMPLES
        if is_click:
            self._on_click(time.monotonic())
        return frame


@dataclass
class CallResult:
    rtts_ms: list[float]
    gap_pct: float  # playout slots without received audio, in the measured window
    relay_drop_pct: float  # the share of the echo the relay's drops removed (JitterRelay.unfillable_gap_pct)
    client_buffer: Optional[JitterStats] = None
    clicks_sent: int = 0

    @property
    def buffer_gap_pct(self) -> float:
        return self.gap_pct - self.relay_drop_pct


async def _wait_connected(pc: RTCPeerConnection) -> None:
    deadline = time.monotonic() + _CONNECT_TIMEOUT_S
    while pc.connectionState != "connected":
        if pc.connectionState == "failed" or time.monotonic() > deadline:
            raise RuntimeError(f"benchmark call did not connect ({pc.connectionState})")
        await asyncio.sleep(0.01)


async def echo_call(
    *,
    adaptive: bool,
    seconds: float,
    relay: Optional[JitterRelay] = None,
    far_end: Optional[AnswerPeer] = None,
) -> CallResult:
    """One call: clicks out, echo back, played by a virtual 20 ms clock for `seconds`."""
    far = far_end if far_end is not None else EchoPeer(adaptive=adaptive)
    detections: list[float] = []
    sent: list[float] = []
    playout = Playout(audible_threshold=_CLICK_THRESHOLD, on_first_audible=detections.append)

    def on_click(at: float) -> None:
        sent.append(at)
        playout.expect_audio()  # arm detection for this click only

    buffers: list[AdaptiveJitterBuffer] = []
    tasks: list[asyncio.Task[None]] = []
    acquire_loopback_only()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTrack(ClickSource(interval_s=1.0, on_click=on_click))
        if adaptive:
            hook_adaptive_jitter_buffer(pc, buffers.append)

        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                tasks.append(asyncio.ensure_future(play_track(track, playout)))

        pc.on("track", on_track)
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        if relay is not None:
            offer = await relay.rewrite(offer, "a")
        answer = await far.answer(offer)
        if relay is not None:
            answer = await relay.rewrite(answer, "b")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await _wait_connected(pc)
        gap_pct, drop_pct = await _play_clock(playout, seconds, relay, far.fills_losses)
    finally:
        for task in tasks:
            task.cancel()
        await pc.close()
        await far.close()
        release_loopback_only()
    # Clicks of the warm-up are ignored; a lost click simply has no detection.
    first = time.monotonic() - seconds + _WARMUP_S
    rtts = []
    for detected in detections:
        before = [s for s in sent if s <= detected]
        if before and before[-1] >= first:
            rtts.append((detected - before[-1]) * 1000.0)
    return CallResult(
        rtts_ms=rtts, gap_pct=gap_pct, relay_drop_pct=drop_pct,
        client_buffer=buffers[0].stats() if buffers else None, clicks_sent=len(sent))


async def _play_clock(
    playout: Playout, seconds: float, relay: Optional[JitterRelay], far_end_fills_losses: bool
) -> tuple[float, float]:
    """Pull 20 ms blocks on schedule; return (gap % after the warm-up, relay drop %)."""
    block = np.empty(FRAME_SAMPLES, dtype=np.int16)
    step = FRAME_SAMPLES / RATE
    start = time.monotonic()
    reads = round(seconds / step)
    warm = round(_WARMUP_S / step)
    base_concealed = 0
    for k in range(reads):
        delay = start + k * step - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        playout.read_into(block, play_time=time.monotonic())
        if k == warm:
            base_concealed = playout.stats().concealed
    measured = (reads - warm - 1) * FRAME_SAMPLES
    gap = 100.0 * (playout.stats().concealed - base_concealed) / max(1, measured)
    drop = 0.0 if relay is None else relay.unfillable_gap_pct(far_end_fills_losses)
    return gap, drop


def synthetic_arrivals(count: int, seed: int) -> list[tuple[float, RtpPacket]]:
    """20 ms Opus-like packets with 0-30 ms jitter and 1 % loss, in arrival order."""
    rng = random.Random(seed)
    arrivals = []
    for i in range(count):
        if rng.random() < 0.01:
            continue
        packet = RtpPacket(payload_type=111, sequence_number=i & 0xFFFF,
                           timestamp=(i * FRAME_SAMPLES) & 0xFFFFFFFF, ssrc=1,
                           payload=bytes((0x78, i & 0xFF, 0)))
        packet._data = packet.payload  # type: ignore[attr-defined]
        arrivals.append((i * 0.020 + rng.uniform(0.0, 0.030), packet))
    arrivals.sort(key=lambda item: item[0])
    return arrivals


def add_cost_us(make: Callable[[Callable[[], float]], JitterBuffer], seed: int) -> float:
    """Mean cost of one add() over a jittered, lossy synthetic stream, in µs."""
    arrivals = synthetic_arrivals(20000, seed)
    now = [0.0]
    buffer = make(lambda: now[0])
    elapsed = 0.0
    for at, packet in arrivals:
        now[0] = at
        t0 = time.perf_counter()
        buffer.add(packet)
        elapsed += time.perf_counter() - t0
    return elapsed * 1e6 / len(arrivals)


async def _echo_figures(adaptive: bool, relay_seed: Optional[int], seconds: float
                        ) -> tuple[CallResult, dict[str, float]]:
    """One call, through the relay when seeded; (its result, % of RTP the relay dropped per direction)."""
    if relay_seed is None:
        return await echo_call(adaptive=adaptive, seconds=seconds), {}
    async with JitterRelay(seed=relay_seed, lifetime_s=seconds + 30.0) as relay:
        result = await echo_call(adaptive=adaptive, seconds=seconds, relay=relay)
    # The caller offers ("a"), the echo peer answers ("b"); stats are keyed by receiver.
    return result, {"to_server": 100.0 * relay.stats["b"].drop_share, "to_client": 100.0 * relay.stats["a"].drop_share}


async def measure(quick: bool, adaptive_too: bool = True) -> Figures:
    runs = 3 if quick else 5
    seconds = 5.0 if quick else 9.0
    samples: dict[str, list[float]] = {}

    def keep(name: str, value: float) -> None:
        samples.setdefault(name, []).append(value)

    for run in range(runs):
        # The app's own figures come from bench.engine_echo; the harness wants only the baselines here.
        for adaptive in (True, False) if adaptive_too else (False,):
            suffix = "" if adaptive else "_plain_aiortc"
            clean, _ = await _echo_figures(adaptive, None, seconds)
            if clean.rtts_ms:
                keep("echo_rtt_ms" + suffix, statistics.median(clean.rtts_ms))
            jittered, drops = await _echo_figures(adaptive, run + 1, seconds)
            for direction, pct in drops.items():
                keep(f"jitter_drop_pct_{direction}" + suffix, pct)
            if jittered.rtts_ms:
                keep("jitter_echo_rtt_ms" + suffix, statistics.median(jittered.rtts_ms))
            keep("jitter_gap_pct" + suffix, jittered.buffer_gap_pct)
            log.info("run %d %s: clean %s, jitter %s gap %.2f%% (relay %.2f%%) buffer %s",
                     run, "adaptive" if adaptive else "plain",
                     [round(r) for r in clean.rtts_ms], [round(r) for r in jittered.rtts_ms],
                     jittered.gap_pct, jittered.relay_drop_pct, jittered.client_buffer)
        keep("jitter_buffer_add_us", add_cost_us(
            lambda clock: AdaptiveJitterBuffer(clock=clock, can_merge=lambda pt: True), run))
        keep("jitter_buffer_add_us_plain_aiortc", add_cost_us(
            lambda clock: JitterBuffer(capacity=16, prefetch=4), run))
    return figures_from(samples)


def run(quick: bool, adaptive_too: bool = True) -> Figures:
    """Run every audio benchmark; figures as {"value": median, "min", "max", "runs"}.

    adaptive_too=False measures only plain aiortc (the ``…_plain_aiortc`` baselines)."""
    return asyncio.run(measure(quick, adaptive_too))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    parser.add_argument("--json", action="store_true", help="last line: the figures as JSON")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    figures = run(args.quick)
    print_table(figures, sys.stdout)
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()

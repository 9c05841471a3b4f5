"""Click echo through the real sound devices: device_echo_rtt_ms and where its time goes.

On the private PulseAudio (rig/pulse_rig.py, null sinks kept busy), a 10 ms 1 kHz click
is played into the virtual microphone's sink `micsrc` once a second. The app's real
device audio (core.audio.DeviceAudio: a sounddevice input stream on `mic`, the capture
ring, the engine's send track) carries it to `python main.py serve --mode echo`; the
echo comes back through the engine's jitter buffer and playout stage into the real
sounddevice output stream on `spk`. Two parec recorders, of `micsrc.monitor` and of
`spk.monitor`, say when the click was in the microphone and when it came out of the
speaker; both are put on the monotonic clock the same way (RecordingClock), so their
common delay cancels in the difference.

Two probes inside the app split the round trip where it is ours and where it is not:
when the send track took the click's frame from the capture ring (`sent`), and when the
output stream's callback pulled it from the playout stage (`pulled`). The parts:

- device_echo_capture_ms: microphone → sent (PortAudio input buffer, the 20 ms block,
  the capture ring's wait); PortAudio's own figure for the input buffer is
  device_echo_input_latency_ms and the ring's mean depth device_echo_ring_ms.
- device_echo_network_ms: sent → pulled, what echo_rtt_ms measures without devices
  (transport both ways, the server, the jitter buffer, the playout stage); the mean depth
  of the last two is device_echo_jitter_buffer_ms and device_echo_playout_ms, and what
  they leave is device_echo_transport_ms (there and back, the server's own buffers).
- device_echo_output_ms: pulled → speaker (the output buffer; PortAudio's own figure
  device_echo_output_latency_ms).

    python -m bench.device_echo [--quick] [-v]
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from base.pcm import FRAME_SAMPLES, RATE
from bench.figures import Figures, cli, figures_from
from bench.rig import PhaseWatch, PulseRig, ServerProcess, engine_for, start_server
from core.audio import AudioIO, DeviceAudio, FrameSink, FrameSource, Pull, StreamHealth
from core.call.engine import CallEngine
from core.call.state import Phase

log = logging.getLogger(__name__)

CLICK_THRESHOLD = 3000  # the click peaks at 16000; Opus never makes silence this loud
CLICK_EVERY_S = 1.0  # each echo is back long before the next click
CLICK_QUIET_S = 0.5  # an onset is a loud sample after this much quiet
WARMUP_S = 2.0  # device start-up and the first buffer decisions are not measured
CONNECT_TIMEOUT_S = 20.0
DEPTH_EVERY_S = 0.05
# Where the app keeps what the probes read; no public accessor exists for these yet.
_JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"


def click_train(seconds: float) -> np.ndarray:
    """A 10 ms 1 kHz click at the start of every CLICK_EVERY_S, silence between."""
    train = np.zeros(int(seconds * RATE), dtype=np.int16)
    t = np.arange(RATE // 100) / RATE
    click = (16000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    for start in range(0, len(train) - len(click), int(CLICK_EVERY_S * RATE)):
        train[start:start + len(click)] = click
    return train


def onsets(samples: np.ndarray, threshold: int = CLICK_THRESHOLD) -> list[int]:
    """Indices of the first loud sample of each click: loud after CLICK_QUIET_S of quiet."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    found: list[int] = []
    for index in loud:
        if not found or index - found[-1] > CLICK_QUIET_S * RATE:
            found.append(int(index))
    return found


class RecordingClock:
    """Maps a recording's sample index to monotonic time.

    parec hands over chunks some time after their samples were in the sink; the chunk
    that came soonest bounds that delay best, so sample i is at
    min over chunks (arrival - samples so far / RATE) + i / RATE. The remaining delay
    (parec's own buffering) is the same for two recorders made alike and cancels."""

    def __init__(self) -> None:
        self._offset = float("inf")
        self._samples = 0

    def chunk(self, samples: int, arrived: float) -> None:
        self._samples += samples
        self._offset = min(self._offset, arrived - self._samples / RATE)

    def time_of(self, index: int) -> float:
        return self._offset + index / RATE


class TimedRecording:
    """parec of one PulseAudio source, each chunk's arrival noted on the monotonic clock."""

    def __init__(self, rig: PulseRig, device: str) -> None:
        self.clock = RecordingClock()
        self._chunks: list[bytes] = []
        self._proc = subprocess.Popen(
            ["parec", f"--device={device}", "--latency-msec=10", "--rate=48000", "--channels=1", "--format=s16le"],
            stdout=subprocess.PIPE, env={**os.environ, **rig.env})
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"parec-{device}")
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        # read1: hand over whatever arrived, so each arrival time is close to its chunk's.
        while chunk := self._proc.stdout.read1(1920):  # type: ignore[attr-defined]
            self._chunks.append(chunk)
            self.clock.chunk(len(chunk) // 2, time.monotonic())

    def stop(self) -> np.ndarray:
        self._proc.terminate()
        self._proc.wait(timeout=5)
        self._reader.join(timeout=5)
        data = b"".join(self._chunks)
        return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")

    def onset_times(self) -> list[float]:
        return [self.clock.time_of(i) for i in onsets(self.stop())]


def _first_loud(block: np.ndarray) -> int | None:
    loud = np.flatnonzero(np.abs(block.astype(np.int32)) > CLICK_THRESHOLD)
    return int(loud[0]) if len(loud) else None


def note_onset(times: list[float], block: np.ndarray, handed_over: float) -> None:
    """Append when the click's onset passed, if `block` (handed over at that time) holds one.

    The onset passes `at` samples into the block; the tail of a click that straddles two
    blocks is not a second onset."""
    at = _first_loud(block)
    if at is None:
        return
    onset = handed_over + at / RATE
    if not times or onset - times[-1] > CLICK_QUIET_S:
        times.append(onset)


class _ProbedSource(FrameSource):
    """The app's microphone source, noting when the send track takes a click from it; the
    rest (ADC times, the release cut, health) passes through, so the engine sees the real one."""

    def __init__(self, inner: FrameSource, probes: ProbedDevices) -> None:
        self._inner = inner
        self._probes = probes

    def read_timed_frame(self) -> tuple[float | None, np.ndarray] | None:
        now = time.monotonic()
        self._probes.note_ring_depth(self._inner)
        timed = self._inner.read_timed_frame()
        if timed is not None:
            note_onset(self._probes.sent, timed[1], now)
        return timed

    def read_frame(self) -> np.ndarray | None:
        timed = self.read_timed_frame()
        return None if timed is None else timed[1]

    def discard(self) -> None:
        self._inner.discard()

    def end_capture(self, until: float) -> None:
        self._inner.end_capture(until)

    def capture_done(self) -> bool:
        return self._inner.capture_done()

    def health(self) -> StreamHealth | None:
        return self._inner.health()

    def close(self) -> None:
        self._inner.close()


@dataclass
class ProbedDevices(AudioIO):
    """The app's real DeviceAudio (the rig's default mic and speaker) with the two probes."""

    devices: DeviceAudio = field(default_factory=DeviceAudio)
    sent: list[float] = field(default_factory=list)
    pulled: list[float] = field(default_factory=list)
    ring_depths: list[int] = field(default_factory=list)
    source: FrameSource | None = None
    sink: FrameSink | None = None

    def open_source(self, on_block: Callable[[np.ndarray], None] | None,
                    on_frame: Callable[[], None] | None = None) -> FrameSource:
        self.source = self.devices.open_source(on_block, on_frame)
        return _ProbedSource(self.source, self)

    def open_sink(self, pull: Pull) -> FrameSink:
        def probed(frames: int, play_time: float | None = None) -> np.ndarray:  # PortAudio's thread
            now = time.monotonic()
            block = pull(frames, play_time)
            note_onset(self.pulled, block, now)
            return block

        self.sink = self.devices.open_sink(probed)
        return self.sink

    def note_ring_depth(self, source: FrameSource) -> None:
        depth = getattr(source, "ring_depth", None)  # MicrophoneSource's; files have none
        if depth is not None:
            self.ring_depths.append(depth)

    def stream_latency_ms(self, end: FrameSource | FrameSink | None) -> float | None:
        """PortAudio's reported latency of the stream behind a source or sink, in ms."""
        stream: Any = getattr(end, "_stream", None)
        return None if stream is None else 1000.0 * float(stream.latency)


def _jitter_depth_packets(engine: CallEngine) -> int | None:
    """Packets the adaptive jitter buffer holds now (reached through aiortc's receiver)."""
    conn = getattr(engine, "_conn", None)
    if conn is None:
        return None
    for transceiver in conn.pc.getTransceivers():
        buffer = getattr(transceiver.receiver, _JITTER_BUFFER_ATTR, None)
        if buffer is not None and hasattr(buffer, "stats"):
            return int(buffer.stats().depth)
    return None


@dataclass
class CallParts:
    """One call's per-click parts (ms) and the mean depths sampled over it."""

    total: list[float] = field(default_factory=list)
    capture: list[float] = field(default_factory=list)
    network: list[float] = field(default_factory=list)
    output: list[float] = field(default_factory=list)
    depths: dict[str, float] = field(default_factory=dict)


def _next_after(times: list[float], after: float, within: float) -> float | None:
    return next((t for t in sorted(times) if after - 0.005 <= t <= after + within), None)


def pair_clicks(mic: list[float], sent: list[float], pulled: list[float], speaker: list[float],
                since: float) -> CallParts:
    """Follow each click from the microphone to the speaker through the two probes.

    A click missing at any point (lost, or cut by the end of the call) is left out. The
    5 ms slack lets two clocks' estimates disagree a little about the same instant."""
    parts = CallParts()
    for m in mic:
        if m < since:
            continue
        s = _next_after(sent, m, 0.5)
        p = None if s is None else _next_after(pulled, s, 0.9)
        o = None if p is None else _next_after(speaker, p, 0.5)
        if s is None or p is None or o is None:
            continue
        parts.total.append((o - m) * 1000.0)
        parts.capture.append((s - m) * 1000.0)
        parts.network.append((p - s) * 1000.0)
        parts.output.append((o - p) * 1000.0)
    return parts


async def one_call(rig: PulseRig, server: ServerProcess, seconds: float) -> CallParts:
    audio = ProbedDevices()
    engine = engine_for(server, audio)
    watch = PhaseWatch(engine)
    depths: dict[str, list[float]] = {"jitter_buffer_ms": [], "playout_ms": []}
    mic = speaker = None
    try:
        await engine.start()
        await watch.entered(Phase.CONNECTED, 0, CONNECT_TIMEOUT_S)
        engine.press()  # the gate stays open: every click goes out
        mic, speaker = TimedRecording(rig, "micsrc.monitor"), TimedRecording(rig, "spk.monitor")
        player = rig.play_into_mic(click_train(seconds))
        measured_from = time.monotonic() + WARMUP_S
        while time.monotonic() < measured_from - WARMUP_S + seconds:
            await asyncio.sleep(DEPTH_EVERY_S)
            if time.monotonic() < measured_from:
                continue
            depths["playout_ms"].append(1000.0 * engine.playout_stats().depth / RATE)
            if (packets := _jitter_depth_packets(engine)) is not None:
                depths["jitter_buffer_ms"].append(packets * 1000.0 * FRAME_SAMPLES / RATE)
        await asyncio.sleep(1.0)  # the last echo comes back
        player.wait(timeout=10)
        latencies = {"input_latency_ms": audio.stream_latency_ms(audio.source),
                     "output_latency_ms": audio.stream_latency_ms(audio.sink)}
    finally:
        await engine.close()
        mic_times = mic.onset_times() if mic is not None else []
        speaker_times = speaker.onset_times() if speaker is not None else []
    parts = pair_clicks(mic_times, audio.sent, audio.pulled, speaker_times, measured_from)
    parts.depths = {name: statistics.fmean(values) for name, values in depths.items() if values}
    parts.depths.update({name: value for name, value in latencies.items() if value is not None})
    if audio.ring_depths:
        parts.depths["ring_ms"] = statistics.fmean(audio.ring_depths) * 1000.0 * FRAME_SAMPLES / RATE
    log.info("call: %d clicks in, %d sent, %d pulled, %d out; totals %s; depths %s", len(mic_times), len(audio.sent),
             len(audio.pulled), len(speaker_times), [round(t) for t in parts.total],
             {k: round(v, 1) for k, v in parts.depths.items()})
    return parts


async def measure(rig: PulseRig, quick: bool) -> Figures:
    runs, seconds = (2, 6.0) if quick else (5, 10.0)
    names = ("total", "capture", "network", "output")
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), "--mode", "echo")
        try:
            for _ in range(runs):
                parts = await one_call(rig, server, seconds)
                for name in names:
                    values = getattr(parts, name)
                    if values:
                        key = "device_echo_rtt_ms" if name == "total" else f"device_echo_{name}_ms"
                        samples.setdefault(key, []).append(statistics.median(values))
                for name, value in parts.depths.items():
                    samples.setdefault(f"device_echo_{name}", []).append(value)
                if parts.network:
                    # What the jitter buffer and the playout stage did not hold: the way there and back.
                    held = parts.depths.get("jitter_buffer_ms", 0.0) + parts.depths.get("playout_ms", 0.0)
                    samples.setdefault("device_echo_transport_ms", []).append(statistics.median(parts.network) - held)
        finally:
            server.stop()
    return figures_from(samples)


def run(quick: bool = False) -> Figures:
    with tempfile.TemporaryDirectory() as tmp:
        rig = PulseRig(Path(tmp) / "pulse")
        rig.start()  # before sounddevice is first imported: PortAudio then sees this PulseAudio
        try:
            return asyncio.run(measure(rig, quick))
        finally:
            rig.stop()


def main(argv: list[str] | None = None) -> int:
    return cli("python -m bench.device_echo", __doc__ or "", run, "2 calls of 6 s instead of 5 of 10 s", argv, log)


if __name__ == "__main__":
    sys.exit(main())

"""Push-to-talk release → first audible answer frame, through the engine and the local assistant.

Questions the offline assistant knows are spoken by the bundled synthesizer and sent
as push-to-talk turns by the engine's real capture track to `python main.py serve
--mode assistant`; the answer is pulled by a WavSink's 20 ms clock from the engine's
playout stage, and the figure is the engine's own `response_latency` measurement
(release → first audible sample played), the number the live plot shows. Where the
time goes is read from the server's debug log, per turn: recognition from the commit
to its result (the server decodes while the key is held, so this is the tail plus any
backlog; the decoding part of it separately), synthesis, and the wait for the first
frame out; what is left is transport and client playout.

    python -m bench.response_latency [--quick]
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import tempfile
from pathlib import Path

from bench.figures import Figures, cli, figures_from
from bench.rig import PhaseWatch, ServerProcess, engine_for, start_server
from core.audio import FileAudio, write_wav
from core.call.state import Phase
from core.call.events import EngineEvent, LatencyMeasured
from core.talk import Progress, one_turn
from server.realtime.tts import Synthesizer

log = logging.getLogger(__name__)

QUESTIONS = ("what time is it", "what is three plus four", "what is your name", "thank you",
             "what is two times six", "hello")
_RECOGNISED = re.compile(r"recognised (\d+) ms after the commit, decoding (\d+) ms of it")
_SYNTHESIZED = re.compile(r"answer synthesized in (\d+) ms, first frame out (\d+) ms later")


def _server_breakdown(server: ServerProcess) -> dict[str, list[float]]:
    """Per-turn server stages from its debug log (the server logs them for this reason)."""
    text = "".join(p.read_text(errors="replace") for p in server.home.rglob("server.log*"))
    return {
        "response_asr_ms": [float(m[0]) for m in _RECOGNISED.findall(text)],
        "response_asr_decode_ms": [float(m[1]) for m in _RECOGNISED.findall(text)],
        "response_tts_ms": [float(m[0]) for m in _SYNTHESIZED.findall(text)],
        "response_first_frame_out_ms": [float(m[1]) for m in _SYNTHESIZED.findall(text)],
    }


async def _turns(server: ServerProcess, wavs: list[Path]) -> list[float]:
    audio = FileAudio(wavs[0], None)
    engine = engine_for(server, audio)
    progress = Progress(quiet=True)
    latencies: list[float] = []

    def on_event(event: EngineEvent) -> None:
        if isinstance(event, LatencyMeasured) and event.name == "response_latency":
            latencies.append(event.ms)

    engine.subscribe(progress)
    engine.subscribe(on_event)
    watch = PhaseWatch(engine)
    try:
        await engine.start()
        await watch.entered(Phase.CONNECTED, 0, 20)
        for wav in wavs:
            assert audio.source is not None
            audio.source.load(wav)
            await one_turn(engine, audio, progress)
    finally:
        await engine.close()
    return latencies


async def measure(quick: bool) -> Figures:
    turns = 4 if quick else 12
    synthesizer = Synthesizer()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        wavs = [tmp / f"q{i}.wav" for i in range(turns)]
        for i, wav in enumerate(wavs):
            write_wav(wav, synthesizer.synthesize_blocking(QUESTIONS[i % len(QUESTIONS)]))
        synthesizer.close()
        server = start_server(tmp, "--mode", "assistant")
        try:
            latencies = await _turns(server, wavs)
        finally:
            server.stop()
        samples = {"response_latency_ms": latencies, **_server_breakdown(server)}
    log.info("response latencies: %s", [round(v) for v in latencies])
    return figures_from(samples)


def run(quick: bool = False) -> Figures:
    return asyncio.run(measure(quick))


def main(argv: list[str] | None = None) -> int:
    return cli("python -m bench.response_latency", __doc__ or "", run, "4 turns instead of 12", argv, log)


if __name__ == "__main__":
    sys.exit(main())

"""Hands-free over an acoustic echo: does Sandra hear herself, and does she hear you?

On the PulseAudio rig with the speaker's monitor looped into the microphone (60 ms,
-6 dB, room noise at -50 dBFS, as laptop speakers and microphone), the real engine runs
hands-free on the real sound devices against the real local server:
- questions spoken some seconds apart: `self_interruptions` counts every user turn beyond
  the questions asked plus every answer cut while nobody spoke over it (0 expected);
  `hands_free_response_latency_ms` is each turn's end of speech → first answer sample at
  the speaker; `aec_erle_db` is how far the canceller brought Sandra's echo down on frames
  where only her echo was in the microphone;
- a question spoken over a long answer: `voice_barge_in_ms`, from starting the rig's player
  (which itself takes up to ~0.2 s to sound) to the answer falling silent;
  `answer_self_cuts` counts the runs in which Sandra cut that answer on her own echo
  before the question (0 expected; such a run has no barge-in to time), and
  `barge_in_questions_missed` those in which her next answer was not the question's.

    python -m bench.hands_free [--quick]
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import sounddevice as sd

from bench.figures import Figures, cli, figure
from bench.rig import PulseRig, private_env, start_server
from core.audio import DeviceAudio
from core.call.engine import CallEngine, EngineOptions
from core.call.events import AssistantSpeaking, ServerEvent, TranscriptDelta
from core.call.state import Phase
from rig.engine_helpers import Recorder, custom_settings
from rig.pulse_rig import EchoPath
from rig.server_process import TEST_SERVER_KEY
from server.realtime.responder import Responder
from server.realtime.tts import Synthesizer

log = logging.getLogger(__name__)

QUESTIONS = ("what is three plus four", "what is your name", "what is ten minus three", "thank you",
             "what is eight divided by two", "what is three times three", "what is two plus two",
             "what is five minus one", "what is six plus three", "what is nine minus two")
LONG_QUESTION, INTERRUPTION = "what can you do", "what is two plus two"
SPACING_S = 8.0


async def _call(tmp: Path) -> tuple[object, CallEngine, Recorder]:
    server = start_server(tmp, "--mode", "assistant")
    settings = custom_settings(server.base_url, hands_free=True)
    engine = CallEngine(settings, audio=DeviceAudio("pulse", "pulse"), api_key=TEST_SERVER_KEY,
                        options=EngineOptions(save_transcript=False))
    recorder = Recorder(engine)
    await engine.start()
    await recorder.wait_phase(Phase.CONNECTED, 30)
    return server, engine, recorder


async def _questions(rig: PulseRig, tmp: Path, speech: dict[str, np.ndarray], count: int) -> dict[str, list[float]]:
    server, engine, recorder = await _call(tmp)
    try:
        started = time.monotonic()
        for n, question in enumerate(QUESTIONS[:count]):
            await asyncio.sleep(max(0.0, started + n * SPACING_S - time.monotonic()))
            await asyncio.to_thread(rig.play_into_mic(speech[question]).wait, 15)
        await asyncio.sleep(SPACING_S)
        latencies = engine.telemetry.values("response_latency")
        erle = engine.microphone.echo_reduction_db
    finally:
        await engine.close()
        server.stop()
    turns = sum(1 for e in recorder.events if isinstance(e, TranscriptDelta) and e.final and e.role == "user")
    cuts = sum(1 for e in recorder.events if isinstance(e, ServerEvent) and e.type == "output_audio_buffer.cleared")
    log.info("%d questions: %d user turns, %d cut answers, ERLE %s", count, turns, cuts, erle)
    samples: dict[str, list[float]] = {"self_interruptions": [max(0, turns - count) + cuts],
                                       "hands_free_response_latency_ms": list(latencies)}
    if erle is not None:
        samples["aec_erle_db"] = [erle]
    return samples


async def _barge_in(rig: PulseRig, tmp: Path, speech: dict[str, np.ndarray]) -> tuple[float, bool] | None:
    """ms from the question to the answer falling silent, and whether the question was
    answered; None: she cut the answer before the question."""
    server, engine, recorder = await _call(tmp)
    try:
        rig.play_into_mic(speech[LONG_QUESTION])
        await recorder.wait_for(lambda e: isinstance(e, AssistantSpeaking) and e.speaking, 30)
        began = len(recorder.events)
        await asyncio.sleep(3.5)  # well into the answer: the canceller has settled
        if AssistantSpeaking(False) in recorder.events[began:]:
            log.warning("Sandra cut her answer before the question")
            return None
        spoke = time.monotonic()
        seen = len(recorder.events)
        rig.play_into_mic(speech[INTERRUPTION])
        await recorder.wait_for(lambda e: isinstance(e, AssistantSpeaking) and not e.speaking, 10, since=seen)
        stopped_ms = (time.monotonic() - spoke) * 1000
        answer = await recorder.wait_for(lambda e: isinstance(e, TranscriptDelta) and e.final
                                         and e.role == "assistant", 30, since=seen)
        return stopped_ms, answer.text == Responder().answer(INTERRUPTION, []).text
    finally:
        await engine.close()
        server.stop()


def run(quick: bool = False) -> Figures:
    count, barge_ins = (4, 1) if quick else (len(QUESTIONS), 3)
    synthesizer = Synthesizer()
    try:
        speech = {q: synthesizer.synthesize_blocking(q) for q in (*QUESTIONS, LONG_QUESTION, INTERRUPTION)}
    finally:
        synthesizer.close()
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ.update(private_env(tmp / "home", None))  # no transcript or log lands in anyone's home
        rig = PulseRig(tmp / "pulse")
        rig.start()
        sd._terminate()  # PortAudio enumerates devices once: redo it now that the rig's server runs
        sd._initialize()
        echo = EchoPath(rig, latency_ms=60, gain_db=-6.0, noise_dbfs=-50.0)
        try:
            for name, values in asyncio.run(_questions(rig, tmp / "q", speech, count)).items():
                samples.setdefault(name, []).extend(values)
            timed = [asyncio.run(_barge_in(rig, tmp / f"b{n}", speech)) for n in range(barge_ins)]
            samples["voice_barge_in_ms"] = [run[0] for run in timed if run is not None]
            samples["answer_self_cuts"] = [sum(run is None for run in timed)]
            samples["barge_in_questions_missed"] = [sum(run is not None and not run[1] for run in timed)]
        finally:
            echo.remove()
            rig.stop()
    return {name: figure(values) for name, values in samples.items() if values}


def main(argv: list[str] | None = None) -> int:
    return cli("python -m bench.hands_free", __doc__, run, "four questions and one barge-in", argv, log)


if __name__ == "__main__":
    raise SystemExit(main())

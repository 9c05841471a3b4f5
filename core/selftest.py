"""Self-test check of the client: one push-to-talk turn through the engine.

The engine starts the embedded local server and asks it a question; the question's
audio comes from the caller (main.py synthesizes it with the server's voice, since
the bundle carries no espeak-ng program), so core needs nothing of server/.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import numpy as np

from core.audio import FileAudio, read_wav, write_wav
from core.config import Settings
from core.call.engine import CallEngine, EngineOptions
from core.talk import Progress, one_turn, wait_connected


def talk_turn(question: np.ndarray) -> str:
    """Ask the embedded server `question` (int16 mono 48 kHz); a one-line summary, or raises."""
    return asyncio.run(_talk_turn(question))


async def _talk_turn(question: np.ndarray) -> str:
    with tempfile.TemporaryDirectory(prefix="sandra-selftest-") as tmp:
        audio = FileAudio(Path(tmp) / "question.wav", Path(tmp) / "answer.wav")
        write_wav(audio.input_path, question)
        engine = CallEngine(Settings(), audio=audio, options=EngineOptions(save_transcript=False))
        progress = Progress(quiet=True)
        engine.subscribe(progress)
        try:
            await engine.start()
            await wait_connected(engine, progress)
            await one_turn(engine, audio, progress)
        finally:
            await engine.close()
        answer_audio = read_wav(audio.output_path)
    messages = engine.history.messages()
    said = [m["content"] for m in messages if m["role"] == "user"]
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    if not said or "time" not in said[0] or not answers:
        raise RuntimeError(f"the turn went wrong: heard {said}, answered {answers}")
    if np.count_nonzero(np.abs(answer_audio.astype(np.int32)) > 1000) < 4800:
        raise RuntimeError("the answer had no audible speech")
    latency = engine.telemetry.stats("response_latency")["avg"]
    return f"asked {said[0]!r}, heard {answers[0]!r}, first answer audio after {latency:.0f} ms"

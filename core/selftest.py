"""Headless self-test: one line per check, then PASS or FAIL.

Checks are named "module:function" and imported only when they run, so a broken
part fails its own line instead of the whole command. A check returns a short
detail string or raises.
"""

from __future__ import annotations

import asyncio
import importlib
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from core.logs import redact

# Order matters a little: cheap checks first, real calls last.
CHECKS: list[tuple[str, str]] = [
    ("runtime libraries", "core.selftest:check_runtime"),
    ("sound library", "core.selftest:check_portaudio"),
    ("main window", "gui.selftest:selftest_check"),
    ("metrics receiver", "server.metrics_receiver:selftest_check"),
    ("local realtime call", "server.realtime.selftest:selftest_check"),
    ("push-to-talk turn with the embedded server", "core.selftest:check_talk_turn"),
]


def check_runtime() -> str:
    import aiohttp
    import aiortc
    import av
    import numpy

    return f"aiortc {aiortc.__version__}, av {av.__version__}, aiohttp {aiohttp.__version__}, numpy {numpy.__version__}"


def check_portaudio() -> str:
    import sounddevice

    return f"PortAudio {sounddevice.get_portaudio_version()[1]}"


def check_talk_turn() -> str:
    """A `talk`-style turn: the engine starts the embedded server and asks it the time."""
    return asyncio.run(_talk_turn())


async def _talk_turn() -> str:
    import numpy as np

    from core.audio import FileAudio, read_wav, write_wav
    from core.config import Settings
    from core.engine import CallEngine, EngineOptions
    from core.talk import Progress, one_turn, wait_connected
    from server.realtime.tts import Synthesizer  # the bundle has no espeak-ng program: speak with the library

    synthesizer = Synthesizer()
    try:
        question = await synthesizer.synthesize("what time is it")
    finally:
        synthesizer.close()
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


def _resolve(target: str) -> Callable[[], str]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def run(checks: Sequence[tuple[str, str]], out: TextIO, *, verbose: bool = False) -> bool:
    ok = True
    for label, target in checks:
        started = time.monotonic()
        try:
            detail = _resolve(target)()
            status = "ok"
        except Exception as exc:  # noqa: BLE001 - every failure is one FAIL line, not a crash
            ok = False
            status = "FAIL"
            detail = f"{type(exc).__name__}: {exc}"
            if verbose:
                detail += "\n" + traceback.format_exc()
        elapsed = (time.monotonic() - started) * 1000
        out.write(redact(f"[{status:>4}] {label} ({elapsed:.0f} ms): {detail}") + "\n")
        out.flush()
    out.write("PASS\n" if ok else "FAIL\n")
    return ok

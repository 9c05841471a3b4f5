"""Whole push-to-talk turns with the assistant: memory across a reconnect, real sound devices, barge-in."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import numpy as np
import pytest

from core.audio import DeviceAudio, FileAudio
from core.call.state import Phase
from core.call.engine import CallEngine
from core.call.events import AssistantSpeaking, ServerEvent, TranscriptDelta
from rig.engine_helpers import Recorder, custom_settings, engine_options, is_audible
from rig.pulse_rig import RATE
from rig.server_process import TEST_SERVER_KEY, start_server
from rig.speech_samples import make_speech_wav, read_wav_int16

pytestmark = pytest.mark.timeout(150)


def _final(recorder: Recorder, role: str) -> list[str]:
    return [e.text for e in recorder.events if isinstance(e, TranscriptDelta) and e.final and e.role == role]


async def _turn(engine: CallEngine, audio: FileAudio, recorder: Recorder) -> str:
    """Hold the button for the loaded utterance, release, and return the answer's text."""
    answers = len(_final(recorder, "assistant"))
    engine.press()
    await asyncio.wait_for(audio.source.finished.wait(), 15)
    await asyncio.sleep(0.1)
    engine.release()
    await recorder.wait_for(lambda e: isinstance(e, ServerEvent) and e.type == "response.done"
                            and len(_final(recorder, "assistant")) > answers, 30)
    return _final(recorder, "assistant")[-1]


async def test_conversation_goes_on_after_the_server_is_killed_and_restarted(tmp_path, private_home):
    server = start_server(tmp_path, "--mode", "assistant")
    port = server.port
    audio = FileAudio(make_speech_wav("what time is it", tmp_path / "q1.wav"), None)
    engine = CallEngine(custom_settings(server.base_url), audio=audio, api_key=TEST_SERVER_KEY, options=engine_options())
    recorder = Recorder(engine)
    try:
        await engine.start()
        await recorder.wait_phase(Phase.CONNECTED, 20)
        first = await _turn(engine, audio, recorder)
        assert first.startswith("It is")

        os.kill(server.pid, signal.SIGKILL)
        server.proc.wait(5)
        await recorder.wait_phase(Phase.RECONNECTING, 10)
        server = start_server(tmp_path, "--mode", "assistant", "--port", str(port))
        await recorder.wait_for(lambda e: engine.state.phase is Phase.CONNECTED and engine.reconnects >= 1, 40)

        audio.source.load(make_speech_wav("what did i say before", tmp_path / "q2.wav"))
        second = await _turn(engine, audio, recorder)
    finally:
        await engine.close()
        server.stop()
    # the new server process knows the first question only because the engine re-seeded it
    assert "what time is it" in second.lower(), second
    assert [m["role"] for m in engine.history.messages()] == ["user", "assistant", "user", "assistant"]


async def test_push_to_talk_through_real_sound_devices(tmp_path, private_home, pulse):
    server = start_server(tmp_path, "--mode", "assistant")
    speech, _ = read_wav_int16(make_speech_wav("what time is it", tmp_path / "q.wav"))
    engine = CallEngine(custom_settings(server.base_url), audio=DeviceAudio("pulse", "pulse"),
                        api_key=TEST_SERVER_KEY, options=engine_options())
    recorder = Recorder(engine)
    speaker = pulse.record_speaker()
    try:
        await engine.start()
        await recorder.wait_phase(Phase.CONNECTED, 20)
        engine.press()
        player = pulse.play_into_mic(speech)
        await asyncio.to_thread(player.wait, 15)
        await asyncio.sleep(0.3)
        engine.release()
        await recorder.wait_for(lambda e: isinstance(e, ServerEvent) and e.type == "output_audio_buffer.stopped", 30)
        await asyncio.sleep(0.8)  # the tail of the answer through the sink
    finally:
        heard = speaker.stop()
        await engine.close()
        server.stop()
    assert any("time" in text for text in _final(recorder, "user"))
    assert _final(recorder, "assistant")[-1].startswith("It is")
    assert is_audible(heard[RATE // 2:]), "the answer was not heard on the speaker monitor"
    assert engine.telemetry.stats("response_latency")["count"] == 1


async def test_barge_in_silences_the_answer_within_100_ms(tmp_path, private_home):
    server = start_server(tmp_path, "--mode", "assistant")
    audio = FileAudio(make_speech_wav("what can you do", tmp_path / "q.wav"), tmp_path / "out.wav")
    engine = CallEngine(custom_settings(server.base_url), audio=audio, api_key=TEST_SERVER_KEY, options=engine_options())
    recorder = Recorder(engine)
    try:
        await engine.start()
        await recorder.wait_phase(Phase.CONNECTED, 20)
        engine.press()
        await asyncio.wait_for(audio.source.finished.wait(), 15)
        engine.release()
        await recorder.wait_for(lambda e: isinstance(e, AssistantSpeaking) and e.speaking, 30)
        await asyncio.sleep(0.6)  # well into the answer
        before = len(audio.sink.samples())
        assert is_audible(audio.sink.samples()[-RATE // 5:]), "the answer was not playing before the barge-in"
        engine.press()  # barge-in
        pressed = time.monotonic()
        await recorder.wait_for(lambda e: isinstance(e, ServerEvent) and e.type == "output_audio_buffer.cleared", 5)
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - pressed)))
        engine.release()
        after = audio.sink.samples()[before:]
    finally:
        await engine.close()
        server.stop()
    loud = np.flatnonzero(np.abs(after.astype(np.int32)) > 1000)
    last_loud_ms = (loud[-1] + 1) * 1000 / RATE if len(loud) else 0.0
    assert last_loud_ms <= 100, f"the answer kept playing {last_loud_ms:.0f} ms after the barge-in"
    assert len(after) > RATE // 2  # the sink kept running, so the silence was real playout

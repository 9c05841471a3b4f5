"""Hands-free on laptop-like speakers: Sandra must not hear herself.

The rig loops the speaker's monitor back into the microphone (PulseAudio
module-loopback, 60 ms, -6 dB) over room noise at -50 dBFS, as laptop speakers and a
laptop microphone do. The real engine runs hands-free on the real sound devices
against the real local server (its own VAD ends turns). With echo cancellation on,
every question is one turn and one answer, and a question spoken over a long answer
stops it fast and is answered; with it off, the same rig shows the problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from core.audio import DeviceAudio
from core.call.engine import CallEngine
from core.call.events import AssistantSpeaking, ServerEvent, TranscriptDelta
from core.call.state import Phase
from rig.engine_helpers import Recorder, custom_settings, engine_options
from rig.pulse_rig import RATE, EchoPath, PulseRig
from rig.server_process import TEST_SERVER_KEY, start_server
from rig.speech_samples import make_speech_wav, read_wav_int16
from server.realtime.responder import SORRY, Responder, normalize

pytestmark = pytest.mark.timeout(240)

QUESTIONS = ("what is three plus four", "what is your name", "what is ten minus three", "thank you",
             "what is eight divided by two", "what is three times three", "what is two plus two",
             "what is five minus one", "what is six plus three", "what is nine minus two")
SPACING_S = 10.0  # one question every ten seconds, as the rig
BARGE_IN_LIMIT_MS = 300
RIG_PLAYER_START_MS = 200  # pacat's start-up on a loaded machine, before the voice is in the microphone


def _speech(text: str, tmp_path) -> np.ndarray:
    samples, rate = read_wav_int16(make_speech_wav(text, tmp_path / (text.replace(" ", "_") + ".wav")))
    assert rate == RATE
    return samples


def _finals(recorder: Recorder, role: str) -> list[str]:
    return [e.text for e in recorder.events if isinstance(e, TranscriptDelta) and e.final and e.role == role]


def _answer(event: object) -> bool:
    return isinstance(event, TranscriptDelta) and event.final and event.role == "assistant"


@contextlib.asynccontextmanager
async def hands_free_call(tmp_path, echo_cancellation: bool) -> AsyncIterator[tuple[CallEngine, Recorder]]:
    """The real engine, hands-free on the rig's devices, connected to the real local server."""
    server = start_server(tmp_path, "--mode", "assistant")
    settings = custom_settings(server.base_url, hands_free=True, echo_cancellation=echo_cancellation,
                               noise_suppression=echo_cancellation)
    engine = CallEngine(settings, audio=DeviceAudio("pulse", "pulse"), api_key=TEST_SERVER_KEY,
                        options=engine_options())
    recorder = Recorder(engine)
    try:
        await engine.start()
        await recorder.wait_phase(Phase.CONNECTED, 30)
        yield engine, recorder
    finally:
        await engine.close()
        server.stop()


async def _ask_spaced(pulse: PulseRig, questions, speech: dict[str, np.ndarray]) -> None:
    started = time.monotonic()
    for n, question in enumerate(questions):
        await asyncio.sleep(max(0.0, started + n * SPACING_S - time.monotonic()))
        player = pulse.play_into_mic(speech[question])
        await asyncio.to_thread(player.wait, 15)
    await asyncio.sleep(SPACING_S)  # the last answer, and any turn Sandra's own voice would make


@pytest.fixture
def echo_path(pulse: PulseRig):
    path = EchoPath(pulse, latency_ms=60, gain_db=-6.0, noise_dbfs=-50.0)
    try:
        yield path
    finally:
        path.remove()


async def test_ten_questions_hands_free_over_an_echo_are_ten_turns_and_ten_answers(tmp_path, private_home, pulse,
                                                                                  echo_path):
    speech = {q: _speech(q, tmp_path) for q in QUESTIONS}
    async with hands_free_call(tmp_path, echo_cancellation=True) as (engine, recorder):
        await _ask_spaced(pulse, QUESTIONS, speech)
    said = [normalize(t) for t in _finals(recorder, "user")]
    answered = _finals(recorder, "assistant")
    report = f"\nasked: {list(QUESTIONS)}\nheard: {said}\nanswered: {answered}"
    assert len(said) == len(QUESTIONS) and len(answered) == len(QUESTIONS), "Sandra's voice made turns" + report
    right = sum(q == s for q, s in zip(QUESTIONS, said))
    assert right >= len(QUESTIONS) - 1, "questions were not heard whole" + report  # espeak over noise: one slip
    cuts = [e for e in recorder.events if isinstance(e, ServerEvent) and e.type == "output_audio_buffer.cleared"]
    assert not cuts, "an answer was cut although nobody spoke over it" + report
    # Every answer was measured, from the end of the question to its first sound at the speaker.
    assert engine.telemetry.stats("response_latency")["count"] == len(QUESTIONS)


async def test_a_question_over_a_long_answer_stops_it_fast_and_is_answered(tmp_path, private_home, pulse, echo_path):
    long_question, interruption = "what can you do", "what is two plus two"
    speech = {q: _speech(q, tmp_path) for q in (long_question, interruption)}
    async with hands_free_call(tmp_path, echo_cancellation=True) as (engine, recorder):
        pulse.play_into_mic(speech[long_question])
        await recorder.wait_for(lambda e: isinstance(e, AssistantSpeaking) and e.speaking, 30)
        began = len(recorder.events)
        await asyncio.sleep(3.5)  # well into the answer (~6 s long): the canceller has settled on it
        assert AssistantSpeaking(False) not in recorder.events[began:], "Sandra cut her answer before the user spoke"
        # A loaded machine can tear the speaker's reference (an underrun); the decider then
        # waits until the canceller cancels again, so the user says it once more, as a person would.
        for attempt in range(2):
            seen = len(recorder.events)
            spoke = time.monotonic()
            pulse.play_into_mic(speech[interruption])
            try:
                await recorder.wait_for(lambda e: isinstance(e, AssistantSpeaking) and not e.speaking, 2.5, since=seen)
                break
            except AssertionError:
                if attempt:
                    raise
        stopped_ms = (time.monotonic() - spoke) * 1000
        said = attempt + 1
        try:
            answer = await recorder.wait_for(_answer, 30, since=seen)
            if answer.text == SORRY:
                # Under load AEC3 can swallow the start of words said over a loud answer whole
                # (double-talk; 2 of 16 instrumented runs with two busy loops) and the question
                # comes out garbled, as it may to a person: said again once she has said so, it
                # must be answered.
                await recorder.wait_for(lambda e: isinstance(e, AssistantSpeaking) and not e.speaking, 15,
                                        since=len(recorder.events))
                repeated, said = len(recorder.events), said + 1
                pulse.play_into_mic(speech[interruption])
                answer = await recorder.wait_for(_answer, 30, since=repeated)
        except AssertionError:  # timed out
            answer = None
    assert answer is not None and answer.text == Responder().answer(interruption, []).text, (
        f"the question (said {said} times; the answer stopped {stopped_ms:.0f} ms after it) was not answered: "
        f"heard {_finals(recorder, 'user')}, answered {_finals(recorder, 'assistant')}")
    # Timed from starting the rig's player, which takes up to ~0.2 s to sound in the microphone.
    assert stopped_ms <= BARGE_IN_LIMIT_MS + RIG_PLAYER_START_MS, f"Sandra went on {stopped_ms:.0f} ms after the user spoke"
    assert normalize(interruption) in [normalize(t) for t in _finals(recorder, "user")]


async def test_without_echo_cancellation_the_same_rig_makes_sandra_answer_herself(tmp_path, private_home, pulse,
                                                                                 echo_path):
    questions = QUESTIONS[:3]
    speech = {q: _speech(q, tmp_path) for q in questions}
    async with hands_free_call(tmp_path, echo_cancellation=False) as (engine, recorder):
        await _ask_spaced(pulse, questions, speech)
    said = _finals(recorder, "user")
    cuts = [e for e in recorder.events if isinstance(e, ServerEvent) and e.type == "output_audio_buffer.cleared"]
    # Her own voice comes back as speech: extra turns, or answers cut by her own echo.
    assert len(said) > len(questions) or cuts, f"no sign of the echo: heard {said}"

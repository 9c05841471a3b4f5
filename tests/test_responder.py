"""The offline assistant's answers: every intent, arithmetic, recall from the conversation;
and, through one real call, the written answer shown while the spoken one is said."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import numpy as np
import pytest
from aiohttp import web

from base import loopback_ice
from base.pcm import level_dbfs
from rig.realtime_client import RealtimeClient, ephemeral_key
from server.realtime.app import RealtimeServer, ServerOptions
from server.realtime.runner import RunningServer
from server.realtime.speech import SpeechEngine
from server.realtime.tts import Synthesizer
from server.realtime.responder import SORRY, Answer, Intent, Responder, grammar_sums, normalize, parse_sum

FIXED = datetime(2024, 3, 5, 15, 7, tzinfo=timezone.utc)  # a Tuesday afternoon


@pytest.fixture
def responder() -> Responder:
    return Responder(clock=lambda: FIXED, name="Sandra")


@pytest.mark.parametrize(
    ("when", "written", "spoken"),
    [
        (datetime(2024, 3, 5, 14, 8), "It is 2:08 PM.", "It is 2 oh 8 PM."),
        (datetime(2024, 3, 5, 15, 7), "It is 3:07 PM.", "It is 3 oh 7 PM."),
        (datetime(2024, 3, 5, 9, 45), "It is 9:45 AM.", "It is 9:45 AM."),
        (datetime(2024, 3, 5, 0, 0), "It is 12:00 AM.", "It is 12 AM."),
        (datetime(2024, 3, 5, 12, 30), "It is 12:30 PM.", "It is 12:30 PM."),
        (datetime(2024, 3, 5, 23, 10), "It is 11:10 PM.", "It is 11:10 PM."),
    ],
)
def test_time_is_written_for_the_transcript_and_spoken_for_the_voice(when: datetime, written: str,
                                                                      spoken: str) -> None:
    assert Responder(clock=lambda: when).answer("what time is it", []) == Answer(written, spoken)


def test_date_and_day(responder: Responder) -> None:
    assert responder.answer("what is the date", []).text == "Today is Tuesday, March 5, 2024."
    assert responder.answer("What day is it?", []).text == "Today is Tuesday, March 5, 2024."


@pytest.mark.parametrize(
    ("heard", "expected"),
    [
        ("hello", "Hello! How can I help you?"),
        ("hi sandra", "Hello! How can I help you?"),
        ("good morning", "Good morning! How can I help you?"),
        ("Good evening!", "Good evening! How can I help you?"),
        ("thank you", "You're welcome."),
        ("thanks a lot", "You're welcome."),
        ("goodbye", "Goodbye! Talk to you soon."),
        ("see you later", "Goodbye! Talk to you soon."),
        ("what is three plus four", "Three plus four is 7."),
        ("what's six times seven", "Six times seven is 42."),
        ("what is nine minus two", "Nine minus two is 7."),
        ("ten divided by two", "Ten divided by two is 5."),
        ("what is seven divided by two", "Seven divided by two is 3.5."),
        ("what is two minus nine", "Two minus nine is -7."),
        ("what is twenty times twenty", "Twenty times twenty is 400."),
        ("what is 4 plus 5", "Four plus five is 9."),
        ("what is five divided by zero", "You cannot divide by zero."),
    ],
)
def test_fixed_answers_and_arithmetic(responder: Responder, heard: str, expected: str) -> None:
    assert responder.answer(heard, []) == Answer(expected, expected)  # read aloud as written


def test_name_and_abilities_use_the_configured_name() -> None:
    nova = Responder(name="Nova")
    assert nova.answer("what is your name", []).text.startswith("My name is Nova.")
    assert "hello nova" in nova.phrases and "hello sandra" not in nova.phrases
    assert "arithmetic" in nova.answer("what can you do", []).text
    assert nova.answer("help", []) == nova.answer("what can you do", [])


def test_arithmetic_beyond_small_numbers_is_not_understood(responder: Responder) -> None:
    assert parse_sum("what is twenty one plus two") is None
    assert responder.answer("what is 21 plus 2", []).text == SORRY
    assert responder.answer("what is apple plus two", []).text == SORRY


def test_recall_uses_reseeded_items_and_skips_the_question_itself(responder: Responder) -> None:
    conversation = [
        {"role": "system", "content": "You are Sandra."},
        # Re-seeded by a client after a reconnect (conversation.item.create).
        {"role": "user", "content": "Remind me to buy milk"},
        {"role": "assistant", "content": "Sorry, I did not catch that."},
        {"role": "user", "content": "what did i say before"},
    ]
    assert responder.answer("what did I say before", conversation).text == "You said: Remind me to buy milk."


def test_recall_when_the_question_is_not_in_the_conversation_yet(responder: Responder) -> None:
    conversation = [
        {"role": "user", "content": "what time is it"},
        {"role": "assistant", "content": "It is 3:07 PM."},
    ]
    assert responder.answer("what was my last question", conversation).text == "You said: what time is it."


def test_recall_of_an_earlier_identical_question_that_was_answered(responder: Responder) -> None:
    conversation = [
        {"role": "user", "content": "hello"},
        {"role": "user", "content": "what did i say before"},
        {"role": "assistant", "content": "You said: hello."},
    ]
    assert responder.answer("what did i say before", conversation).text == "You said: what did i say before."


def test_recall_with_nothing_said_before(responder: Responder) -> None:
    only_this = [{"role": "system", "content": "x"}, {"role": "user", "content": "what did i say"}]
    assert responder.answer("what did i say", only_this).text == "You have not said anything before this."
    assert responder.answer("what did i say", []).text == "You have not said anything before this."


@pytest.mark.parametrize("heard", [None, "", "   ", "the weather in paris", "what is the capital of france"])
def test_unknown_or_nothing_gets_a_short_apology(responder: Responder, heard: str | None) -> None:
    assert responder.answer(heard, []).text == SORRY


def test_every_grammar_phrase_is_answered_and_normalized(responder: Responder) -> None:
    assert len(responder.phrases) == len(set(responder.phrases))
    assert 100 < len(responder.phrases) < 600  # modest: recognition accuracy falls as it grows
    for phrase in responder.phrases:
        assert phrase == normalize(phrase)
        assert responder.intent_of(phrase) is not None, phrase
        answer = responder.answer(phrase, [])
        assert answer.text and answer.spoken and answer.text != SORRY, phrase


def test_every_intent_is_in_the_grammar(responder: Responder) -> None:
    assert {responder.intent_of(p) for p in responder.phrases} == set(Intent)


def test_grammar_arithmetic_has_no_negative_results_or_fractions() -> None:
    sums = grammar_sums()
    assert all(not s.spoken_answer().split(" is ")[-1].startswith("-") for s in sums)
    assert all("." not in s.spoken_answer().split(" is ")[-1][:-1] for s in sums)
    assert len(sums) == 121 + 66 + 121 + 37  # plus, minus (a ≥ b), times, exact divisions


# ---- through a real call: the transcript shows the written form, the voice says the spoken one -----


class RecordingSynthesizer(Synthesizer):
    """The real espeak synthesizer, noting each text it is asked to say."""

    def __init__(self) -> None:
        super().__init__()
        self.said: list[str] = []
        self.voices: list[str | None] = []

    async def synthesize(self, text: str, voice: str | None = None) -> np.ndarray:
        self.said.append(text)
        self.voices.append(voice)
        return await super().synthesize(text, voice)


@pytest.mark.timeout(60)
async def test_a_call_shows_the_written_time_and_speaks_the_spoken_one() -> None:
    synthesizer = RecordingSynthesizer()
    responder = Responder(clock=lambda: datetime(2024, 3, 5, 14, 8))
    speech = SpeechEngine(ThreadPoolExecutor(max_workers=1), responder, synthesizer)
    key = secrets.token_urlsafe(24)
    # In-process, so the server's clock is the test's; the question arrives as text (no recognizer needed).
    loopback_ice.acquire_loopback_only()
    server = RealtimeServer(ServerOptions(server_key=key), speech)
    runner = web.AppRunner(server.make_app())
    running = RunningServer(server, runner, "127.0.0.1", 0, loopback=True)  # its stop() undoes all of this
    try:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        client = await RealtimeClient.connect(base_url, await ephemeral_key(base_url, key))
        try:
            await client.wait_for("session.created")
            mark = client.mark()
            client.send({"type": "session.update", "session": {"type": "realtime",
                                                               "audio": {"output": {"voice": "en-us+f3"}}}})
            client.send({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": "what time is it"}]}})
            await client.wait_for("conversation.item.created", since=mark)
            client.send({"type": "response.create"})
            done = await client.wait_for("response.done", since=mark, timeout=30)
            started = client.of_type("output_audio_buffer.started", mark)[0]["_received_at"]
            answer_audio = client.audio.since(started)
        finally:
            await client.close()
    finally:
        await running.stop()
    assert done["response"]["status"] == "completed", done
    assert [e["delta"] for e in client.of_type("response.output_audio_transcript.delta", mark)] == ["It is 2:08 PM."]
    assert [e["transcript"] for e in client.of_type("response.output_audio_transcript.done", mark)] == ["It is 2:08 PM."]
    assert done["response"]["output"][0]["content"][0]["transcript"] == "It is 2:08 PM."
    assert synthesizer.said == ["It is 2 oh 8 PM."]
    assert synthesizer.voices == ["en-us+f3"]  # the session's voice, chosen before any audio
    assert level_dbfs(answer_audio) > -40  # and it was really said

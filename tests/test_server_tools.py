"""The local server speaks tools and takes typed turns (issue #17), offline.

Pure parts with tables (timer phrases, tool requests, answers built from outputs, the
session's tools); then real calls to the real server process over loopback WebRTC, the
client side played by rig/realtime_client.py running the app's own built-in tools
(core/tools/builtin.py). Every event either way is checked against the openai SDK's types.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

import numpy as np
import pytest

from _server_fixtures import connect, server  # noqa: F401 - fixtures
from base.pcm import level_dbfs
from core.tools import builtin
from rig.realtime_client import RealtimeClient
from rig.server_process import ServerProcess
from rig.speech_samples import make_speech_wav, missing_tools, read_wav_int16
from server.realtime.responder import (KNOWN_TOOLS, Answer, Intent, Responder, ToolRequest, answer_tool_output,
                                       duration_words, parse_timer, time_answer, timer_phrases)
from server.realtime.session import SessionConfig, SessionError, apply_session_update
from test_wire_shapes import all_problems

# ---- the mind: phrases, requests, answers ------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("set a timer for two seconds", 2),
    ("set a timer for one second", 1),
    ("set a timer for thirty seconds", 30),
    ("set a timer for two minutes", 120),
    ("set a timer for forty five minutes", 2700),
    ("set a timer for sixty minutes", 3600),
    ("set a timer for 90 seconds", 90),
    ("set a timer for zero seconds", None),
    ("set a timer for many seconds", None),
    ("set a timer for two hours", None),
    ("set a timer", None),
])
def test_timer_phrases_give_seconds(text: str, seconds: int | None) -> None:
    assert parse_timer(text) == seconds


def test_the_grammar_offers_one_to_sixty_seconds_and_minutes() -> None:
    phrases = timer_phrases()
    assert len(phrases) == 120 and len(set(phrases)) == 120
    assert "set a timer for one minute" in phrases and "set a timer for fifty nine seconds" in phrases
    assert all(phrase in Responder().phrases for phrase in phrases)
    assert {parse_timer(p) for p in phrases} == set(range(1, 61)) | {60 * n for n in range(1, 61)}


@pytest.mark.parametrize(("seconds", "words"), [
    (1, "one second"), (2, "two seconds"), (30, "thirty seconds"), (60, "one minute"), (120, "two minutes"),
    (90, "one minute and thirty seconds"), (3600, "one hour"), (3725, "one hour and two minutes and five seconds"),
    (1.6, "two seconds"), (0, "zero seconds"),
])
def test_durations_in_words(seconds: float, words: str) -> None:
    assert duration_words(seconds) == words


@pytest.mark.parametrize(("heard", "declared", "expected"), [
    ("set a timer for two seconds", KNOWN_TOOLS, ToolRequest("set_timer", {"seconds": 2, "label": "timer"})),
    ("Set a timer for 2 minutes.", {"set_timer"}, ToolRequest("set_timer", {"seconds": 120, "label": "timer"})),
    ("what time is it", {"get_time"}, ToolRequest("get_time", {})),
    ("what is three plus four", {"calculate"}, ToolRequest("calculate", {"expression": "3 + 4"})),
    ("ten divided by two", {"calculate"}, ToolRequest("calculate", {"expression": "10 / 2"})),
    ("what is three plus four", {"get_time", "set_timer"}, None),  # not declared: answered as before
    ("set a timer for two seconds", {"get_time"}, None),
    ("what is the date", KNOWN_TOOLS, None),  # no tool for that
    ("hello", KNOWN_TOOLS, None),
    (None, KNOWN_TOOLS, None),
])
def test_a_declared_tool_turns_its_phrase_into_a_request(heard: str | None, declared: set[str],
                                                         expected: ToolRequest | None) -> None:
    assert Responder().tool_request(heard, declared) == expected


def test_without_the_timer_tool_a_timer_is_refused_honestly() -> None:
    responder = Responder()
    assert responder.intent_of("set a timer for two minutes") is Intent.TIMER
    assert "cannot set timers" in responder.answer("set a timer for two minutes", []).text


TIMER = ToolRequest("set_timer", {"seconds": 120, "label": "timer"})


@pytest.mark.parametrize(("request_", "output", "answer"), [
    (TIMER, '{"ok": true, "seconds": 120}', Answer.plain("Your timer for two minutes is set.")),
    (TIMER, '{"timer_id": 1, "label": "timer", "seconds": 2, "rings_at": "2026-11-30T14:08:02+00:00"}',
     Answer.plain("Your timer for two seconds is set.")),
    (TIMER, '{"ok": true}', Answer.plain("Your timer for two minutes is set.")),  # the seconds asked for
    (ToolRequest("get_time"), '{"local_time": "2026-11-30T14:08:00+01:00", "weekday": "Monday"}',
     Answer("It is 2:08 PM.", "It is 2 oh 8 PM.")),
    (ToolRequest("calculate", {"expression": "3 + 4"}), '{"expression": "3 + 4", "result": 7}',
     Answer("3 + 4 is 7.", "3 plus 4 is 7.")),
    (ToolRequest("calculate", {"expression": "10 / 4"}), '{"expression": "10 / 4", "result": 2.5}',
     Answer("10 / 4 is 2.5.", "10 divided by 4 is 2.5.")),
    (TIMER, '{"error": "A timer lasts from 1 second to 24 hours."}',
     Answer.plain("Sorry, that did not work: A timer lasts from 1 second to 24 hours.")),
    (ToolRequest("calculate"), '{"error": "Division by zero. Try another."}',
     Answer.plain("Sorry, that did not work: Division by zero.")),
    (ToolRequest("get_time"), '{"error": "' + "x " * 200 + '"}',
     Answer.plain("Sorry, that did not work: " + ("x " * 50).strip() + "....")),
    (ToolRequest("get_time"), '{"local_time": "soon"}', Answer.plain('{"local_time": "soon"}.')),
    (None, "The lights are on", Answer.plain("The lights are on.")),
    (TIMER, "", Answer.plain("Done.")),
])
def test_answers_built_from_tool_outputs(request_: ToolRequest | None, output: str, answer: Answer) -> None:
    assert answer_tool_output(request_, output) == answer


def test_the_time_answer_is_the_one_the_time_intent_gives() -> None:
    when = datetime(2024, 3, 5, 9, 5)
    assert time_answer(when) == Responder(clock=lambda: when).answer("what time is it", [])


# ---- the session's tools ---------------------------------------------------------------

GET_TIME = {"type": "function", "name": "get_time", "description": "The time.", "parameters": {"type": "object"}}


def test_session_tools_are_kept_reported_and_switched_off_by_tool_choice_none() -> None:
    session = apply_session_update(SessionConfig(), {"tools": [GET_TIME, {"type": "function", "name": "calculate"}]})
    assert session.tool_names == {"get_time", "calculate"}
    reported = session.to_json("sess_1")
    assert reported["tools"][0] == GET_TIME and reported["tool_choice"] == "auto"
    assert apply_session_update(session, {"tool_choice": "none"}).tool_names == frozenset()
    assert apply_session_update(session, {"instructions": "x"}).tool_names == session.tool_names  # kept
    assert apply_session_update(session, {"tools": []}).tool_names == frozenset()
    forced = apply_session_update(session, {"tool_choice": {"type": "function", "name": "get_time"}})
    assert forced.to_json("s")["tool_choice"] == {"type": "function", "name": "get_time"}


@pytest.mark.parametrize(("tools", "param"), [
    ({"type": "function", "name": "x"}, "session.tools"),
    (["get_time"], "session.tools[0]"),
    ([{"type": "mcp", "server_label": "x"}], "session.tools[0].type"),
    ([{"type": "function"}], "session.tools[0].name"),
    ([{"type": "function", "name": 5}], "session.tools[0].name"),
    ([{"type": "function", "name": "a", "parameters": "{}"}], "session.tools[0].parameters"),
    ([GET_TIME, GET_TIME], "session.tools[1].name"),
    ([GET_TIME] * 129, "session.tools"),
])
def test_bad_tools_are_refused_with_the_field_named(tools: Any, param: str) -> None:
    with pytest.raises(SessionError) as caught:
        apply_session_update(SessionConfig(), {"tools": tools})
    assert caught.value.param == param


def test_a_bad_tool_choice_is_refused() -> None:
    with pytest.raises(SessionError) as caught:
        apply_session_update(SessionConfig(), {"tool_choice": "sometimes"})
    assert caught.value.param == "session.tool_choice"


# ---- real calls to the real server -----------------------------------------------------------

pytestmark = pytest.mark.timeout(120)

FUNCTION_CALL_SEQUENCE = ["response.created", "response.output_item.added", "response.function_call_arguments.delta",
                          "response.function_call_arguments.done", "response.output_item.done", "response.done"]


@pytest.fixture(scope="module")
def timer_question(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """'set a timer for two seconds', spoken by espeak-ng at 48 kHz."""
    if missing_tools():
        pytest.fail(f"missing {missing_tools()}: run ./bootstrap.sh test")
    path = make_speech_wav("set a timer for two seconds", tmp_path_factory.mktemp("timer") / "timer.wav")
    samples, rate = read_wav_int16(path)
    assert rate == 48000
    return samples


def _check_wire(client: RealtimeClient) -> None:
    assert all_problems(client.received_raw, server=True) == ""
    assert all_problems(client.sent_raw, server=False) == ""


async def _spoken_answer(client: RealtimeClient, mark: int) -> tuple[dict[str, Any], str, np.ndarray]:
    """(response.done, transcript, audio) of the answer whose turn began at mark."""
    done = await client.wait_for("response.done", since=mark, timeout=30)
    assert done["response"]["status"] == "completed", done
    started = client.of_type("output_audio_buffer.started", mark)
    assert started, f"no audio for the answer: {[e['type'] for e in client.events[mark:]]}"
    transcript = done["response"]["output"][0]["content"][0]["transcript"]
    return done, transcript, client.audio.since(started[0]["_received_at"])


def _types(client: RealtimeClient, since: int, prefix: str = "response.") -> list[str]:
    return [e["type"] for e in client.events[since:] if e["type"].startswith(prefix)]


async def test_a_typed_turn_is_answered_in_voice_and_text(server: ServerProcess) -> None:
    client = await connect(server)
    try:
        mark = client.type_text("what is three plus four")
        created = await client.wait_for("conversation.item.created", since=mark)
        assert created["item"]["content"] == [{"type": "input_text", "text": "what is three plus four"}]
        done, transcript, audio = await _spoken_answer(client, mark)
        # Typed turns skip recognition only: no commit, no transcription event.
        assert not client.of_type("input_audio_buffer.committed", mark)
        deltas = [e["delta"] for e in client.of_type("response.output_audio_transcript.delta", mark)]
    finally:
        await client.close()
    assert transcript == "Three plus four is 7." and deltas == [transcript]
    assert done["response"]["output"][0]["role"] == "assistant"
    assert len(audio) > 48000 * 0.5 and level_dbfs(audio) > -35, "the answer was spoken"
    _check_wire(client)


async def _timer_call(client: RealtimeClient, how: str, question: np.ndarray) -> tuple[int, dict[str, Any]]:
    """Ask for a two-second timer by voice or typing; (mark, the function_call item)."""
    mark = await client.push_to_talk(question) if how == "spoken" else client.type_text("set a timer for two seconds")
    done = await client.wait_for("response.done", since=mark, timeout=30)
    assert done["response"]["status"] == "completed", done
    assert _types(client, mark) == FUNCTION_CALL_SEQUENCE
    (item,) = done["response"]["output"]
    assert item["type"] == "function_call" and item["name"] == "set_timer" and item["status"] == "completed"
    assert json.loads(item["arguments"]) == {"seconds": 2, "label": "timer"}
    # Every event of the call names the same call and item.
    for kind in ("response.function_call_arguments.delta", "response.function_call_arguments.done"):
        (event,) = client.of_type(kind, mark)
        assert (event["call_id"], event["item_id"], event["response_id"]) == (
            item["call_id"], item["id"], done["response"]["id"])
    assert client.of_type("response.function_call_arguments.done", mark)[0]["arguments"] == item["arguments"]
    assert client.of_type("response.output_item.added", mark)[0]["item"]["arguments"] == ""
    return mark, item


@pytest.mark.parametrize("how", ["spoken", "typed"])
async def test_set_a_timer_calls_the_tool_waits_and_confirms(server: ServerProcess, timer_question: np.ndarray,
                                                             how: str) -> None:
    rang: list[tuple[str, float]] = []
    timers = builtin.Timers(on_ring=lambda label: rang.append((label, time.monotonic())))
    client = await connect(server)
    try:
        await client.declare_tools("get_time", "calculate", "set_timer")
        mark, item = await _timer_call(client, how, timer_question)
        # The server waits for the output: no new response, no answer audio.
        waited_from = time.monotonic()
        await asyncio.sleep(1.5)
        assert _types(client, mark) == FUNCTION_CALL_SEQUENCE
        assert level_dbfs(client.audio.since(waited_from)) < -60
        # The app's own timer tool runs the call, as the engine would.
        output = await timers.set_timer(**json.loads(item["arguments"]))
        set_at = time.monotonic()
        mark = client.send_function_output(item["call_id"], json.dumps(output))
        created = await client.wait_for("conversation.item.created", since=mark)
        assert created["item"]["type"] == "function_call_output" and created["item"]["call_id"] == item["call_id"]
        _, transcript, audio = await _spoken_answer(client, mark)
        assert transcript == "Your timer for two seconds is set."
        assert level_dbfs(audio) > -35
        await asyncio.sleep(max(0.0, set_at + 3.0 - time.monotonic()))
    finally:
        timers.cancel_all()
        await client.close()
    assert [label for label, _ in rang] == ["timer"] and 1.9 < rang[0][1] - set_at < 3.0
    _check_wire(client)


async def test_time_and_sums_go_through_their_tools_when_declared(server: ServerProcess) -> None:
    client = await connect(server)
    try:
        await client.declare_tools("get_time", "calculate")
        results = {}
        for question, tool, expected_arguments in (("what time is it", builtin.get_time, {}),
                                                   ("what is three plus four", builtin.calculate,
                                                    {"expression": "3 + 4"})):
            mark = client.type_text(question)
            done = await client.wait_for("response.done", since=mark, timeout=30)
            (item,) = done["response"]["output"]
            assert item["type"] == "function_call" and json.loads(item["arguments"]) == expected_arguments
            output = tool(**json.loads(item["arguments"]))
            mark = client.send_function_output(item["call_id"], json.dumps(output))
            results[question] = (output, (await _spoken_answer(client, mark))[1])
    finally:
        await client.close()
    time_output, said = results["what time is it"]
    assert said == time_answer(datetime.fromisoformat(time_output["local_time"])).text
    assert results["what is three plus four"][1] == "3 + 4 is 7."
    _check_wire(client)


async def test_without_the_tool_the_server_answers_as_before(server: ServerProcess) -> None:
    client = await connect(server)
    try:
        await client.declare_tools("get_time")  # calculate and set_timer not offered
        answers = []
        for question in ("what is three plus four", "set a timer for two minutes"):
            mark = client.type_text(question)
            answers.append((await _spoken_answer(client, mark))[1])
            assert not client.of_type("response.function_call_arguments.done", mark)
        # tool_choice "none": even a declared tool is not called.
        mark = client.mark()
        client.send({"type": "session.update", "session": {"type": "realtime", "tool_choice": "none"}})
        await client.wait_for("session.updated", since=mark)
        mark = client.type_text("what time is it")
        answers.append((await _spoken_answer(client, mark))[1])
    finally:
        await client.close()
    assert answers[0] == "Three plus four is 7."
    assert "cannot set timers" in answers[1]
    assert answers[2].startswith("It is ")
    _check_wire(client)


async def test_an_error_output_is_said_and_a_stranger_output_refused(server: ServerProcess) -> None:
    client = await connect(server)
    try:
        await client.declare_tools("set_timer")
        mark = client.type_text("set a timer for sixty minutes")
        done = await client.wait_for("response.done", since=mark, timeout=30)
        (item,) = done["response"]["output"]
        assert json.loads(item["arguments"])["seconds"] == 3600
        # An output for a call this conversation never made: refused, the call goes on.
        mark = client.mark()
        client.send({"type": "conversation.item.create", "event_id": "stranger",
                     "item": {"type": "function_call_output", "call_id": "call_nobody", "output": "{}"}})
        error = (await client.wait_for("error", since=mark))["error"]
        assert (error["param"], error["event_id"]) == ("item.call_id", "stranger")
        mark = client.send_function_output(item["call_id"], json.dumps({"error": "The timer service is down."}))
        _, transcript, audio = await _spoken_answer(client, mark)
    finally:
        await client.close()
    assert transcript == "Sorry, that did not work: The timer service is down."
    assert level_dbfs(audio) > -35
    _check_wire(client)

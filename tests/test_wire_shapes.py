"""Every event on `oai-events` checked against OpenAI's own SDK types (issue #14).

The `openai` package ships pydantic models generated from OpenAI's API spec: the
client-event and server-event unions of `openai.types.realtime`. A real call to the
real local server process (a full push-to-talk turn, a barge-in, a re-seed, a refused
event) is captured message by message in both directions, and each message is
validated strictly (as JSON, no coercion) by those unions. The SDK's models accept
unknown fields, so a second check walks the parsed models for keys they do not know:
a client that parses with the SDK would silently drop those.

Two callers: rig/realtime_client.py (its own wire record) for the server's side, including
a hands-free turn and a voice barge-in; and the app's CallEngine (aiortc's data channel
tapped in this process) for what the app sends. The client_secrets response is checked
against the SDK's ClientSecretCreateResponse the same way.
"""

from __future__ import annotations

import asyncio
import json
import typing
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiortc import RTCDataChannel
from openai.types.realtime import ClientSecretCreateResponse, RealtimeClientEvent, RealtimeServerEvent
from pydantic import BaseModel, TypeAdapter, ValidationError

from _server_fixtures import connect, question, server  # noqa: F401 - fixtures
from core.call.state import Phase
from core.call.engine import CallEngine
from rig.engine_helpers import Recorder, custom_settings, engine_options, tone_audio
from rig.realtime_client import RealtimeClient
from rig.server_process import TEST_SERVER_KEY, ServerProcess

pytestmark = pytest.mark.timeout(150)

SERVER_EVENTS: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
CLIENT_EVENTS: TypeAdapter[Any] = TypeAdapter(RealtimeClientEvent)

# The only fields allowed beyond the SDK's models: the API reference's own
# session.created / session.updated examples carry these, which the models lack.
DOCUMENTED_EXTRAS: dict[tuple[str, str], frozenset[str]] = {
    ("session.created", "session"): frozenset({"object", "id", "expires_at"}),
    ("session.updated", "session"): frozenset({"object", "id", "expires_at"}),
}


def _members(union: Any) -> dict[str, type[BaseModel]]:
    """The union's models by their `type` literal (for errors that name one model, not fifty)."""
    (inner, *_metadata) = typing.get_args(union)
    by_type: dict[str, type[BaseModel]] = {}
    for model in typing.get_args(inner):
        for literal in typing.get_args(model.model_fields["type"].annotation):
            by_type[literal] = model
    return by_type


SERVER_MODELS = _members(RealtimeServerEvent)
CLIENT_MODELS = _members(RealtimeClientEvent)


def unknown_fields(value: Any, event_type: str, path: str = "") -> list[str]:
    """Dotted paths of the keys no SDK model along the way declares."""
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in unknown_fields(item, event_type, f"{path}[{i}]")]
    if not isinstance(value, BaseModel):
        return []
    allowed = DOCUMENTED_EXTRAS.get((event_type, path), frozenset())
    found = [f"{path}.{key}" if path else key for key in (value.model_extra or {}) if key not in allowed]
    for name in type(value).model_fields:
        found += unknown_fields(getattr(value, name), event_type, f"{path}.{name}" if path else name)
    return found


def shape_problems(message: str | bytes, *, server: bool) -> list[str]:
    """What is wrong with one data-channel message by the SDK's types; [] when nothing."""
    adapter, models = (SERVER_EVENTS, SERVER_MODELS) if server else (CLIENT_EVENTS, CLIENT_MODELS)
    try:
        kind = json.loads(message).get("type")
    except (ValueError, AttributeError):
        return ["not a JSON object"]
    if kind not in models:
        return [f"type {kind!r} is not a {'server' if server else 'client'} event of the SDK"]
    try:
        event = adapter.validate_json(message, strict=True)
    except ValidationError:
        try:  # the same failure, said by the one model this type names
            models[kind].model_validate_json(message, strict=True)
        except ValidationError as exc:
            return [f"{kind}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        return [f"{kind}: refused by the union but not by its own model"]
    return [f"{kind}: unknown field {path}" for path in unknown_fields(event, kind)]


def response_problems(body: str) -> list[str]:
    """What is wrong with a client_secrets response body by the SDK's ClientSecretCreateResponse."""
    try:
        parsed = TypeAdapter(ClientSecretCreateResponse).validate_json(body, strict=True)
    except ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return [f"unknown field {path}" for path in unknown_fields(parsed, "client_secrets")]


def all_problems(messages: list[str | bytes], *, server: bool) -> str:
    """Every distinct problem of these messages, one a line ('' when none)."""
    problems = [problem for m in messages for problem in shape_problems(m, server=server)]
    return "\n".join(dict.fromkeys(problems))


def types_of(messages: list[str | bytes]) -> list[str]:
    return [json.loads(m)["type"] for m in messages]


# ---- the checker itself -------------------------------------------------------------

SESSION = {"type": "realtime", "model": "gpt-realtime", "instructions": "",
           "audio": {"output": {"voice": "marin"}}}
# Issue #17: the local server's function tools (tests/test_server_tools.py checks real calls with these).
TOOLS = [{"type": "function", "name": "set_timer", "description": "A timer.", "parameters": {"type": "object"}}]
CALL_ITEM = {"id": "item_1", "object": "realtime.item", "type": "function_call", "status": "completed",
             "call_id": "call_1", "name": "set_timer", "arguments": '{"seconds": 2, "label": "timer"}'}
CALL_IDS = {"event_id": "e1", "response_id": "resp_1", "item_id": "item_1", "output_index": 0, "call_id": "call_1"}


@pytest.mark.parametrize("event, server, problem", [
    ({"type": "input_audio_buffer.cleared", "event_id": "e1"}, True, None),
    ({"type": "input_audio_buffer.cleared", "event_id": "e1", "extra": 1}, True, "unknown field extra"),
    ({"type": "input_audio_buffer.cleared"}, True, "event_id: Field required"),
    ({"type": "no.such.event", "event_id": "e1"}, True, "is not a server event"),
    ({"type": "session.created", "event_id": "e1",
      "session": {**SESSION, "object": "realtime.session", "id": "sess_1", "expires_at": 0}}, True, None),
    ({"type": "session.created", "event_id": "e1", "session": {**SESSION, "created_at": 0}}, True,
     "unknown field session.created_at"),
    ({"type": "session.update", "session": {**SESSION, "id": "sess_1"}}, False, "unknown field session.id"),
    ({"type": "session.update", "session": {**SESSION, "audio": {"input": {"turn_detection": {
        "type": "semantic_vad", "threshold": 0.5}}}}}, False, "unknown field session.audio.input.turn_detection"),
    ({"type": "error", "event_id": "e1", "error": {"type": "invalid_request_error", "code": "x",
                                                   "message": "m", "param": None, "event_id": None}}, True, None),
    ({"type": "input_audio_buffer.speech_started", "event_id": "e1", "audio_start_ms": "5", "item_id": "i"}, True,
     "audio_start_ms: Input should be a valid integer"),
    ({"type": "response.cancel"}, False, None),
    ({"type": "session.update", "session": {**SESSION, "tools": TOOLS, "tool_choice": "auto"}}, False, None),
    ({"type": "session.updated", "event_id": "e1", "session": {
        **SESSION, "object": "realtime.session", "id": "sess_1", "expires_at": 0, "tools": TOOLS,
        "tool_choice": {"type": "function", "name": "set_timer"}}}, True, None),
    ({"type": "response.output_item.added", "event_id": "e1", "response_id": "resp_1", "output_index": 0,
      "item": {**CALL_ITEM, "status": "in_progress", "arguments": ""}}, True, None),
    ({"type": "response.function_call_arguments.delta", **CALL_IDS, "delta": "{}"}, True, None),
    ({"type": "response.function_call_arguments.done", **CALL_IDS, "name": "set_timer", "arguments": "{}"}, True,
     None),
    ({"type": "response.function_call_arguments.done", **CALL_IDS, "arguments": "{}"}, True, "name: Field required"),
    ({"type": "response.output_item.done", "event_id": "e1", "response_id": "resp_1", "output_index": 0,
      "item": {**CALL_ITEM, "seconds": 2}}, True, "unknown field item.seconds"),
    ({"type": "response.done", "event_id": "e1", "response": {"id": "resp_1", "object": "realtime.response",
                                                              "status": "completed", "output": [CALL_ITEM]}}, True, None),
    ({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "call_1",
                                                   "output": '{"ok": true}'}}, False, None),
    ({"type": "conversation.item.created", "event_id": "e1", "previous_item_id": None, "item": {
        "id": "item_2", "object": "realtime.item", "type": "function_call_output", "status": "completed",
        "call_id": "call_1", "output": '{"ok": true}'}}, True, None),
])
def test_the_checker_finds_wrong_types_missing_and_unknown_fields(event, server, problem) -> None:
    problems = shape_problems(json.dumps(event), server=server)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


# ---- a real call --------------------------------------------------------------------

async def test_a_full_turn_a_barge_in_and_a_reseed_match_the_sdk(server: ServerProcess, question) -> None:
    client = await connect(server)
    try:
        # Re-seed a conversation, as the app does on a new session.
        mark = client.mark()
        client.send({"type": "session.update", "session": {
            "type": "realtime", "instructions": "Be brief.",
            "audio": {"input": {"turn_detection": None, "transcription": {"model": "whisper-1", "language": "en"},
                                "noise_reduction": {"type": "near_field"}},
                      "output": {"voice": "marin"}}}})
        await client.wait_for("session.updated", since=mark)
        for role, part, text in (("user", "input_text", "hello"), ("assistant", "output_text", "Hi there.")):
            client.send({"type": "conversation.item.create", "event_id": f"seed_{role}",
                         "item": {"type": "message", "role": role, "content": [{"type": part, "text": text}]}})
        # A full push-to-talk turn.
        mark = await client.push_to_talk(question)
        done = await client.wait_for("response.done", since=mark, timeout=30)
        assert done["response"]["status"] == "completed"
        # Issue #15's fields: a refused voice change, then semantic_vad reported back, then push-to-talk again.
        mark = client.mark()
        client.send({"type": "session.update", "event_id": "new_voice",
                     "session": {"type": "realtime", "audio": {"output": {"voice": "cedar"}}}})
        assert (await client.wait_for("error", since=mark))["error"]["code"] == "cannot_update_voice"
        # A hands-free turn, taken by the server's VAD.
        await _set_turn_detection(client, {"type": "semantic_vad", "eagerness": "high"})
        mark = client.mark()
        client.speak(question)
        await client.wait_for("output_audio_buffer.started", since=mark, timeout=30)
        # ...and barged in on by voice: the server's VAD cuts the answer.
        mark = client.mark()
        client.speak(question)
        cleared = await client.wait_for("output_audio_buffer.cleared", since=mark, timeout=10)
        cut = await client.wait_for("response.done", since=mark, timeout=10)
        assert cut["response"]["status"] == "cancelled" and cleared["response_id"] == cut["response"]["id"]
        await client.wait_for("input_audio_buffer.speech_stopped", since=mark, timeout=15)
        await client.wait_for("output_audio_buffer.stopped", since=mark, timeout=30)
        await _set_turn_detection(client, None)
        # A barge-in: cancel while the answer plays.
        mark = await client.push_to_talk(question)
        await client.wait_for("output_audio_buffer.started", since=mark, timeout=30)
        client.send({"type": "response.cancel"})
        client.send({"type": "output_audio_buffer.clear"})
        cut = await client.wait_for("response.done", since=mark, timeout=10)
        assert cut["response"]["status"] == "cancelled"
        # A refused event: its error must have OpenAI's shape too.
        mark = client.mark()
        client.send({"type": "response.cancel", "event_id": "nothing_to_cancel"})
        error = await client.wait_for("error", since=mark)
        assert error["error"]["event_id"] == "nothing_to_cancel"
        await asyncio.sleep(0.3)
    finally:
        await client.close()
    received = types_of(client.received_raw)
    for expected in ("session.created", "session.updated", "conversation.item.created", "input_audio_buffer.cleared",
                     "input_audio_buffer.committed", "conversation.item.input_audio_transcription.completed",
                     "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                     "response.created", "response.output_audio_transcript.delta",
                     "response.output_audio_transcript.done", "output_audio_buffer.started",
                     "output_audio_buffer.stopped", "output_audio_buffer.cleared", "response.done", "error"):
        assert expected in received, f"the call never produced {expected}: {received}"
    assert all_problems(client.received_raw, server=True) == ""
    assert all_problems(client.sent_raw, server=False) == ""


async def _set_turn_detection(client: RealtimeClient, detection: dict | None) -> None:
    mark = client.mark()
    client.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "turn_detection": detection}}}})
    await client.wait_for("session.updated", since=mark)


async def test_the_client_secrets_response_matches_the_sdk(server: ServerProcess) -> None:
    session = {"type": "realtime", "instructions": "Be brief.", "audio": {
        "input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"},
                  "noise_reduction": {"type": "far_field"}, "transcription": {"model": "whisper-1", "language": "en"}},
        "output": {"voice": "cedar"}}}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.base_url}/realtime/client_secrets", json={"session": session},
                             headers={"Authorization": f"Bearer {server.server_key}"}) as response:
            body = await response.text()
            assert response.status == 200, body
    assert response_problems(body) == []
    reported = json.loads(body)["session"]["audio"]
    assert reported["input"]["turn_detection"]["eagerness"] == "high" and reported["output"]["voice"] == "cedar"
    # The checker sees a field the SDK does not know here too.
    assert response_problems(body.replace('"eagerness"', '"eagerness_level"', 1)) == [
        "unknown field session.audio.input.turn_detection.eagerness_level"]


# ---- what the app's engine sends ---------------------------------------------------------

@dataclass
class WireTap:
    """Every data-channel message this process sends or receives, whoever owns the channel."""

    sent: list[str | bytes] = field(default_factory=list)
    received: list[str | bytes] = field(default_factory=list)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        send, emit = RTCDataChannel.send, RTCDataChannel.emit

        def recording_send(channel: RTCDataChannel, data: str | bytes) -> None:
            self.sent.append(data)
            send(channel, data)

        def recording_emit(channel: RTCDataChannel, event: str, *args: Any, **kwargs: Any) -> bool:
            if event == "message" and args:
                self.received.append(args[0])
            return emit(channel, event, *args, **kwargs)

        monkeypatch.setattr(RTCDataChannel, "send", recording_send)
        monkeypatch.setattr(RTCDataChannel, "emit", recording_emit)


async def test_what_the_engine_sends_matches_the_sdk(server: ServerProcess, tmp_path, private_home,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    tap = WireTap()
    tap.install(monkeypatch)
    engine = CallEngine(custom_settings(server.base_url), audio=tone_audio(tmp_path, 1.0), api_key=TEST_SERVER_KEY,
                        options=engine_options())
    # A conversation from an earlier session, so the new one is re-seeded.
    engine.history.add("user", "hello")
    engine.history.add("assistant", "Hi there.")
    recorder = Recorder(engine)
    try:
        await engine.start()
        await recorder.wait_phase(Phase.CONNECTED, 15)
        # A full push-to-talk turn, answered ("sorry": a tone is no question).
        engine.press()
        await asyncio.sleep(1.0)
        engine.release()
        await _wait_for_message(tap, "output_audio_buffer.started", 30)
        # A barge-in while the answer plays.
        mark = len(tap.received)
        engine.press()
        await _wait_for_message(tap, "response.done", 10, since=mark)
        engine.release()
        # Hands-free switched on mid-call, after audio played: accepted (the voice did not change).
        mark = len(tap.received)
        await engine.set_hands_free(True)
        await _wait_for_message(tap, "session.updated", 10, since=mark)
        assert "cannot_update_voice" not in "".join(map(str, tap.received[mark:]))
    finally:
        await engine.close()
    sent = types_of(tap.sent)
    for expected in ("session.update", "conversation.item.create", "input_audio_buffer.clear",
                     "input_audio_buffer.commit", "response.create", "response.cancel", "output_audio_buffer.clear"):
        assert expected in sent, f"the engine never sent {expected}: {sent}"
    assert all_problems(tap.received, server=True) == ""
    assert all_problems(tap.sent, server=False) == ""


async def _wait_for_message(tap: WireTap, event_type: str, timeout: float, since: int = 0) -> None:
    """Until the server sent event_type (among the messages received from index `since`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while event_type not in types_of(tap.received[since:]):
        if loop.time() > deadline:
            raise AssertionError(f"no {event_type} within {timeout} s; received {types_of(tap.received)}")
        await asyncio.sleep(0.05)

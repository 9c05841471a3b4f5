"""The wire protocol, sans I/O: untrusted messages in, typed events out; client events to JSON."""

from __future__ import annotations

import json
import logging

import pytest

from core.call import protocol as p
from core.call.protocol import MAX_EVENT_BYTES, BadEvent, BadEventLog, parse_server_event

OPTIONS = p.SessionOptions(model="gpt-realtime", instructions="Be brief.", voice="marin",
                           transcription_model="gpt-4o-mini-transcribe")


@pytest.mark.parametrize("message, why", [
    (b'{"type": "x"}', "non-text"),
    ("x" * (MAX_EVENT_BYTES + 1), "oversized"),
    ("{not json", "invalid JSON"),
    ("[" * 100_000 + "]" * 100_000, "invalid JSON"),  # deeper than Python's parser goes
    ('["type"]', "without a type"),
    ('{"type": 7}', "without a type"),
    ("null", "without a type"),
    ('{"type": "response.done"}', "malformed response.done"),
    ('{"type": "response.output_audio_transcript.delta", "delta": 5}', "not text"),
    ('{"type": "session.updated", "session": []}', "malformed session.updated"),
])
def test_what_is_not_a_usable_event_is_a_bad_event_saying_why(message, why):
    with pytest.raises(BadEvent, match=why):
        parse_server_event(message)


@pytest.mark.parametrize("event, expected", [
    ({"type": "session.created", "session": {"audio": {"input": {"turn_detection": None}}}},
     p.SessionChanged(hands_free=False)),
    ({"type": "session.updated", "session": {"audio": {"input": {"turn_detection": {"type": "server_vad"}}}}},
     p.SessionChanged(hands_free=True)),
    ({"type": "input_audio_buffer.speech_started", "audio_start_ms": 5}, p.SpeechStarted()),
    ({"type": "input_audio_buffer.speech_stopped"}, p.SpeechStopped()),
    ({"type": "conversation.item.input_audio_transcription.completed", "item_id": "i1", "transcript": " hi "},
     p.Transcript("user", "hi", True, "i1")),
    ({"type": "conversation.item.input_audio_transcription.delta", "item_id": "i1", "delta": "h"},
     p.Transcript("user", "h", False, "i1")),
    ({"type": "response.output_audio_transcript.delta", "response_id": "r", "delta": "It "},
     p.Transcript("assistant", "It ", False, "r")),
    ({"type": "response.audio_transcript.done", "response_id": "r", "transcript": "It is noon."},
     p.Transcript("assistant", "It is noon.", True, "r")),
    ({"type": "output_audio_buffer.started"}, p.AudioStarted()),
    ({"type": "output_audio_buffer.stopped"}, p.AudioStopped(cut=False)),
    ({"type": "output_audio_buffer.cleared"}, p.AudioStopped(cut=True)),
    ({"type": "response.done", "response": {"status": "completed", "usage": {"total_tokens": 9},
                                            "output": [{"type": "function_call", "call_id": "c", "name": "get_time",
                                                        "arguments": "{}"}]}},
     p.ResponseDone("completed", {"total_tokens": 9}, (p.FunctionCall("c", "get_time", "{}"),))),
    ({"type": "error", "error": {"message": "too short", "code": "input_audio_buffer_commit_empty"}},
     p.ServerError("too short", "input_audio_buffer_commit_empty")),
    ({"type": "rate_limits.updated", "rate_limits": []}, p.Other("rate_limits.updated")),
    ({"type": "some.future.event", "x": [1, 2]}, p.Other("some.future.event")),
])
def test_events_parse_into_typed_events(event, expected):
    kind, parsed = parse_server_event(json.dumps(event))
    assert kind == event["type"]
    assert parsed == expected


@pytest.mark.parametrize("event, wire", [
    (p.ClearInput(), {"type": "input_audio_buffer.clear"}),
    (p.CommitInput(), {"type": "input_audio_buffer.commit"}),
    (p.CreateResponse(), {"type": "response.create"}),
    (p.CancelResponse(), {"type": "response.cancel"}),
    (p.ClearOutput(), {"type": "output_audio_buffer.clear"}),
    (p.CreateMessage("user", "hello"), {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}}),
    (p.CreateMessage("assistant", "hi"), {"type": "conversation.item.create", "item": {
        "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}}),
    (p.FunctionCallOutput("c1", '{"ok": true}'), {"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": "c1", "output": '{"ok": true}'}}),
])
def test_client_events_encode_to_the_wire_shape(event, wire):
    assert json.loads(p.encode(event)) == wire


def test_the_session_asks_for_push_to_talk_or_the_chosen_vad():
    ptt = p.session_config(OPTIONS)
    assert ptt["model"] == "gpt-realtime" and ptt["audio"]["input"]["turn_detection"] is None
    assert ptt["audio"]["output"]["voice"] == "marin"
    assert ptt["audio"]["input"]["noise_reduction"] is None
    semantic = p.SessionOptions(**{**OPTIONS.__dict__, "hands_free": True, "vad": "semantic_vad", "eagerness": "low",
                                   "noise_reduction": "far_field", "language": "fr"})
    config = p.session_config(semantic, with_model=False)
    assert "model" not in config
    assert config["audio"]["input"]["turn_detection"] == {"type": "semantic_vad", "eagerness": "low"}
    assert config["audio"]["input"]["noise_reduction"] == {"type": "far_field"}
    assert config["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe", "language": "fr"}


def test_a_mode_switch_never_resends_the_voice():
    update = p.mode_update(p.SessionOptions(**{**OPTIONS.__dict__, "hands_free": True})).to_json()
    assert update == {"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad"}}}}}
    assert "voice" not in json.dumps(update)
    assert p.full_session_update(OPTIONS).to_json()["session"]["audio"]["output"]["voice"] == "marin"


def test_reseeding_keeps_the_order_and_skips_what_is_not_a_turn():
    kept = [{"role": "user", "content": "remember pineapple"}, {"role": "assistant", "content": "I will."},
            {"role": "system", "content": "ignored"}]
    assert p.reseed(kept) == [p.CreateMessage("user", "remember pineapple"), p.CreateMessage("assistant", "I will.")]


def test_the_bad_event_log_keeps_a_flood_to_a_few_lines(caplog):
    logger = logging.getLogger("test.bad_events")
    bad = BadEventLog(logger, first=10, every=1000)
    with caplog.at_level(logging.WARNING, logger="test.bad_events"):
        for _ in range(5000):
            bad.note("invalid JSON")
    assert bad.count == 5000
    assert len(caplog.records) == 10 + 5  # the first ten, then 1000, 2000, … 5000
    assert caplog.records[-1].getMessage().endswith("(5000 so far)")

"""Hostile data-channel input against the client engine.

The flood (bench/fuzz.py, 20,000 messages here, 100,000+ by `python -m bench.fuzz`) comes
from a real aiortc peer; Hypothesis drives the same entry point, CallEngine._on_message,
directly, with a stand-in connection, to reach shapes the flood is unlikely to hit.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz import fuzz_engine
from core.call.engine import CallEngine
from core.call.events import TranscriptDelta
from rig.engine_helpers import custom_settings, engine_options
from rig.hostile_server import MAX_MESSAGE

SUITE_MESSAGES = 20_000


@pytest.mark.timeout(180)
async def test_twenty_thousand_hostile_messages_leave_the_call_working(tmp_path, private_home) -> None:
    figures = await fuzz_engine(SUITE_MESSAGES, seed=int(time.time()) % 1000, tmp=tmp_path)
    print(json.dumps(figures))  # the figures RELIABILITY.md quotes, in the test log
    assert figures["messages"] == SUITE_MESSAGES and not figures["stalled"], figures
    assert figures["connections"] == 1 and figures["reconnects"] == 0, "the garbage cost the connection"
    assert figures["state_after"] == "connected"
    assert figures["final_event_handled"] and figures["in_history"], "a valid event after the flood was lost"
    assert figures["tracebacks"] == [] and figures["loop_errors"] == []
    # Rate-limited: a few dozen lines for 20,000 bad events, not one each.
    assert figures["bad_events_counted"] > SUITE_MESSAGES // 2
    assert figures["engine_log_lines"] <= 60, figures["log_lines_by_logger"]


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                     max_leaves=20)
_types = st.sampled_from(["conversation.item.input_audio_transcription.completed",
                          "conversation.item.input_audio_transcription.delta",
                          "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
                          "response.audio_transcript.done", "output_audio_buffer.started",
                          "output_audio_buffer.stopped", "input_audio_buffer.speech_stopped",
                          "input_audio_buffer.speech_started", "error"]) | st.text(max_size=30)
_events = st.builds(lambda kind, fields: json.dumps({**fields, "type": kind}),
                    _types, st.dictionaries(st.sampled_from(["transcript", "delta", "response_id", "item_id",
                                                              "error"]), _json, max_size=4))
_messages = (_events | _json.map(json.dumps) | st.text(max_size=200) | st.binary(max_size=200)
             | st.integers(1, 40_000).map(lambda depth: "[" * depth + "]" * depth))


@pytest.fixture(scope="module")
def engine() -> CallEngine:
    return CallEngine(custom_settings("http://127.0.0.1:9/v1"), api_key="sk-test-0000", options=engine_options())


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=_messages)
def test_on_message_never_raises(engine: CallEngine, message) -> None:
    engine._on_message(message)


def test_a_valid_transcript_still_lands_after_garbage(engine: CallEngine, caplog) -> None:
    seen: list[TranscriptDelta] = []
    engine.subscribe(lambda e: seen.append(e) if isinstance(e, TranscriptDelta) else None)
    caplog.set_level(logging.WARNING, logger="core.call.engine")
    for message in ("{", b"\x00", "[" * 50_000, json.dumps({"type": 5}), "z" * (MAX_MESSAGE * 5)):
        engine._on_message(message)
    engine._on_message(json.dumps({"type": "conversation.item.input_audio_transcription.completed",
                                            "transcript": "hello again"}))
    assert [(e.role, e.text, e.final) for e in seen][-1] == ("user", "hello again", True)
    assert engine.history.messages()[-1]["content"] == "hello again"

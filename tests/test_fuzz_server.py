"""Hostile input against the local realtime server and the receivers' parsers.

The flood (bench/fuzz.py; 20,000 messages here, 100,000+ by `python -m bench.fuzz`) goes
to the real server process from a test client; Hypothesis drives the parsers directly.
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.fuzz import fuzz_server
from server.realtime import events, validation
from server.realtime.session import SessionConfig

SUITE_MESSAGES = 20_000


@pytest.mark.timeout(180)
async def test_twenty_thousand_hostile_messages_then_a_normal_turn(tmp_path) -> None:
    figures = await fuzz_server(SUITE_MESSAGES, seed=int(time.time()) % 1000, tmp=tmp_path)
    print(json.dumps(figures))
    assert figures["messages"] == SUITE_MESSAGES and not figures["stalled"], figures
    assert figures["server_alive"] and figures["channel_after"] == "open"
    assert figures["session_updated"] and figures["audio_echoed"], "no normal turn after the flood"
    # Every refused event is answered (OpenAI's behaviour), nearly all of them errors.
    assert figures["error_events_back"] > SUITE_MESSAGES * 0.9
    assert not figures["traceback_in_stderr"], figures["stderr_tail"]
    assert figures["server_stderr_lines"] <= 100, "the console is flooded, one line per bad event"


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                     max_leaves=20)
_client_events = st.builds(lambda kind, body: json.dumps({**body, "type": kind}),
                           st.sampled_from(sorted(events.CLIENT_EVENT_TYPES)) | st.text(max_size=20),
                           st.dictionaries(st.sampled_from(["item", "session", "response", "event_id"]), _json,
                                           max_size=3))
_raw = (_client_events | _json.map(json.dumps) | st.text(max_size=300) | st.binary(max_size=100)
        | st.integers(1, 30_000).map(lambda depth: '{"a":' * depth + "1" + "}" * depth))


@settings(max_examples=800, deadline=None)
@given(message=_raw)
def test_client_event_parsing_refuses_with_event_errors_only(message) -> None:
    try:
        event = events.parse_client_event(message)
    except events.EventError as exc:
        assert exc.to_event()["type"] == "error"
        return
    assert event.type in events.CLIENT_EVENT_TYPES
    if event.type == "conversation.item.create":
        try:
            item = events.conversation_text(event)
        except events.EventError:
            return
        assert item.role in events.ROLES and isinstance(item.text, str)


@settings(max_examples=800, deadline=None)
@given(body=_json.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=300)
       | st.integers(1, 30_000).map(lambda depth: b"[" * depth + b"]" * depth))
def test_client_secret_requests_refuse_with_api_errors_only(body: bytes) -> None:
    try:
        request = validation.parse_client_secret_request(body, SessionConfig())
    except validation.ApiError as exc:
        assert 400 <= exc.status < 500 and exc.body()["error"]["message"]
        return
    assert validation.keys.MIN_TTL_S <= request.ttl_s <= validation.keys.MAX_TTL_S


@settings(max_examples=300, deadline=None)
@given(header=st.none() | st.text(max_size=80))
def test_bearer_header_parsing(header) -> None:
    try:
        token = validation.bearer_token(header)
    except validation.ApiError as exc:
        assert exc.status == 401
        return
    assert token and token == token.strip() and header is not None and token in header

"""Pure request, SDP, session and event checks of the realtime server."""

from __future__ import annotations

import json

import pytest

from server.realtime import events, sdp, validation
from server.realtime.events import EventError
from server.realtime.session import SessionConfig, SessionError, TurnDetection, apply_session_update
from server.realtime.validation import ApiError

OFFER = "\r\n".join([
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", "a=mid:0", "a=rtpmap:111 opus/48000/2",
    "a=ice-ufrag:abcd", "a=ice-pwd:0123456789abcdef012345", "a=fingerprint:sha-256 AA:BB",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "a=mid:1", "a=sctp-port:5000", "",
])


def test_a_good_offer_passes_and_counts_candidates() -> None:
    text, summary = sdp.check_offer(OFFER.encode())
    assert text == OFFER and summary.audio_lines == 1 and summary.candidates == 0
    _, summary = sdp.check_offer(OFFER.replace("a=mid:0", "a=mid:0\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host")
                                 .encode())
    assert summary.candidates == 1


@pytest.mark.parametrize("body,needle", [
    (b"", "v=0"), (b"hello", "v=0"), (b"\xff\xfe", "UTF-8"),
    (OFFER.replace("m=audio", "m=video").encode(), "audio"),
    (OFFER.split("m=application")[0].encode(), "data channel"),
    (OFFER.replace("a=ice-pwd", "a=x").encode(), "ICE"),
    (OFFER.replace("a=fingerprint", "a=x").encode(), "fingerprint"),
    (OFFER.replace("opus/48000/2", "PCMU/8000").encode(), "Opus"),
])
def test_bad_offers_get_400_saying_why(body: bytes, needle: str) -> None:
    with pytest.raises(ApiError) as caught:
        sdp.check_offer(body)
    assert caught.value.status == 400 and needle in caught.value.message


def test_bearer_and_sizes() -> None:
    assert validation.bearer_token("Bearer  abc ") == "abc"
    assert validation.bearer_token("bearer abc") == "abc"
    for bad in (None, "", "Basic abc", "Bearer", "abc"):
        with pytest.raises(ApiError) as caught:
            validation.bearer_token(bad)
        assert caught.value.status == 401
    validation.check_content_length(64 * 1024)
    validation.check_content_length(None)
    with pytest.raises(ApiError) as caught:
        validation.check_content_length(64 * 1024 + 1)
    assert caught.value.status == 413
    error = caught.value.body()["error"]
    assert set(error) == {"message", "type", "code", "param"}


def test_client_secret_body() -> None:
    defaults = SessionConfig()
    assert validation.parse_client_secret_request(b"", defaults).ttl_s == 600
    wanted = validation.parse_client_secret_request(json.dumps({
        "expires_after": {"anchor": "created_at", "seconds": 30},
        "session": {"type": "realtime", "instructions": "x", "audio": {"input": {"turn_detection": None}}},
    }).encode(), defaults)
    assert wanted.ttl_s == 30 and wanted.session.turn_detection is None and wanted.session.instructions == "x"
    for bad in (b"{", b"3", b'{"expires_after": {"seconds": true}}', b'{"session": {"voice": 3}}'):
        with pytest.raises(ApiError) as caught:
            validation.parse_client_secret_request(bad, defaults)
        assert caught.value.status == 400


def test_session_update_merges_and_refuses_wrong_types() -> None:
    start = SessionConfig(turn_detection=None)
    vad = apply_session_update(start, {"turn_detection": {"type": "server_vad", "silence_duration_ms": 300}})
    assert vad.turn_detection == TurnDetection(silence_duration_ms=300)
    tuned = apply_session_update(vad, {"audio": {"input": {"turn_detection": {"threshold": 0.7}}},
                                       "unknown_field": [1]})
    assert tuned.turn_detection == TurnDetection(threshold=0.7, silence_duration_ms=300)
    assert apply_session_update(tuned, {"audio": {"input": {"turn_detection": None}}}).turn_detection is None
    for raw, param in (({"instructions": ["x"]}, "session.instructions"),
                       ({"type": "transcription"}, "session.type"),
                       ({"audio": {"input": {"turn_detection": {"threshold": 2}}}},
                        "session.audio.input.turn_detection.threshold"),
                       ({"audio": {"input": {"turn_detection": {"threshold": True}}}},
                        "session.audio.input.turn_detection.threshold"),
                       ({"audio": {"output": {"voice": 1}}}, "session.audio.output.voice"),
                       ({"audio": []}, "session.audio")):
        with pytest.raises(SessionError) as caught:
            apply_session_update(start, raw)
        assert caught.value.param == param


@pytest.mark.parametrize("message,code", [
    (b"{}", "invalid_message"),
    ("not json", "invalid_json"),
    ("[1]", "invalid_event"),
    ('{"type": 5}', "invalid_type"),
    ('{"type": "no.such.event"}', "unknown_event_type"),
    ('{"type": "response.create", "event_id": 7}', "invalid_type"),
    (json.dumps({"type": "session.update", "pad": "x" * 70_000}), "message_too_large"),
])
def test_hostile_messages_raise_event_errors(message, code: str) -> None:
    with pytest.raises(EventError) as caught:
        events.parse_client_event(message)
    assert caught.value.code == code
    error_event = caught.value.to_event()
    assert error_event["type"] == "error" and error_event["event_id"].startswith("event_")
    assert error_event["error"]["message"]


def test_conversation_items() -> None:
    def item(body: dict) -> events.ClientEvent:
        return events.parse_client_event(json.dumps({"type": "conversation.item.create", "event_id": "e1", **body}))

    text = events.conversation_text(item({"item": {"type": "message", "role": "user",
                                                   "content": [{"type": "input_text", "text": "hello"}]}}))
    assert (text.role, text.text) == ("user", "hello")
    for bad in ({}, {"item": "x"}, {"item": {"role": "robot", "content": [{"type": "input_text", "text": "a"}]}},
                {"item": {"role": "user", "content": []}},
                {"item": {"role": "user", "content": [{"type": "input_text", "text": 5}]}},
                {"item": {"type": "function_call", "role": "user", "content": [{"type": "text", "text": "a"}]}}):
        with pytest.raises(EventError) as caught:
            events.conversation_text(item(bad))
        assert caught.value.event_id == "e1"

"""What the engine accepts from the data channel, and how it logs what it refuses."""

from __future__ import annotations

import json
import logging

import pytest

from core.server_events import MAX_EVENT_BYTES, BadEvent, BadEventLog, parse_event


def test_an_event_is_a_json_object_with_a_string_type():
    assert parse_event('{"type": "session.created", "session": {}}') == {"type": "session.created", "session": {}}


@pytest.mark.parametrize("message, why", [
    (b'{"type": "x"}', "non-text"),
    ("x" * (MAX_EVENT_BYTES + 1), "oversized"),
    ("{not json", "invalid JSON"),
    ("[" * 100_000 + "]" * 100_000, "invalid JSON"),  # deeper than Python's parser goes
    ('["type"]', "without a type"),
    ('{"type": 7}', "without a type"),
    ("null", "without a type"),
])
def test_everything_else_is_a_bad_event_saying_why(message, why):
    with pytest.raises(BadEvent, match=why):
        parse_event(message)


def test_the_bad_event_log_keeps_a_flood_to_a_few_lines(caplog):
    logger = logging.getLogger("test.bad_events")
    bad = BadEventLog(logger, first=10, every=1000)
    with caplog.at_level(logging.WARNING, logger="test.bad_events"):
        for _ in range(5000):
            bad.note("invalid JSON")
    assert bad.count == 5000
    assert len(caplog.records) == 10 + 5  # the first ten, then 1000, 2000, … 5000
    assert caplog.records[-1].getMessage().endswith("(5000 so far)")


def test_a_valid_event_round_trips_any_payload():
    event = {"type": "response.output_audio_transcript.delta", "delta": "é\u2028\x00", "response_id": "r"}
    assert parse_event(json.dumps(event)) == event

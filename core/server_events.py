"""Events from the server, as far as the engine may trust them.

Everything on the data channel is untrusted: non-text or oversized messages, invalid or
absurdly nested JSON, events without a type. `parse_event` turns a raw message into a
dict with a string "type", or says why not; `BadEventLog` counts what was ignored and
keeps the log readable under a flood.
"""

from __future__ import annotations

import json
import logging
from typing import Any

MAX_EVENT_BYTES = 256 * 1024  # a server event bigger than this is not JSON we want to parse


class BadEvent(ValueError):
    """A message that is not an event; the text says what it was, for the log."""


def parse_event(message: object) -> dict[str, Any]:
    if not isinstance(message, str) or len(message) > MAX_EVENT_BYTES:
        raise BadEvent("a non-text or oversized message")
    try:
        event = json.loads(message)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise BadEvent("invalid JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise BadEvent("an event without a type")
    return event


class BadEventLog:
    """Counts ignored events; logs the first few, then every thousandth."""

    def __init__(self, logger: logging.Logger, first: int = 10, every: int = 1000) -> None:
        self._log = logger
        self._first = first
        self._every = every
        self.count = 0

    def note(self, what: str) -> None:
        self.count += 1
        if self.count <= self._first or self.count % self._every == 0:
            self._log.warning("ignored %s from the server (%d so far)", what, self.count)

"""Bounded conversation history: the seed's limits, without its per-message re-serialising.

At most `max_messages` (oldest dropped first). When the total size passes `max_bytes`,
keep the newest `trim_to` (the seed's rule); if those are still over, keep dropping the
oldest, but never the newest message (what was just said is always kept).

Size is what the seed measured, JSON length, made exact and cheap: each message's
size is the UTF-8 length of its compact JSON, computed once when it is added, and the
total is the UTF-8 length of the compact JSON array of all messages, i.e. the sum of
the sizes plus brackets and commas. Adds and drops update it in O(1).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

ROLES = frozenset({"user", "assistant", "system"})
_SEPARATORS = (",", ":")


@dataclass(frozen=True, slots=True)
class _Entry:
    role: str
    content: str
    timestamp: float
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content, "timestamp": self.timestamp}


def _json(value: Any) -> str:
    return json.dumps(value, separators=_SEPARATORS, ensure_ascii=False)


def _utf8_len(text: str) -> int:
    # surrogatepass: a stray surrogate from a bad transcript still has a size instead of raising.
    return len(text.encode("utf-8", "surrogatepass"))


class BoundedHistory:
    """The conversation so far, bounded in count and in bytes.

    `clock` gives each message its timestamp in seconds since the epoch (time.time by
    default; tests pass a fake).
    """

    def __init__(
        self,
        max_messages: int = 50,
        max_bytes: int = 100 * 1024 * 1024,
        trim_to: int = 30,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        if not 1 <= trim_to <= max_messages:
            raise ValueError(f"trim_to must be between 1 and max_messages ({max_messages}), got {trim_to}")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.trim_to = trim_to
        self._clock = clock
        self._entries: deque[_Entry] = deque()
        self._sizes = 0  # sum of the entries' own sizes

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def total_bytes(self) -> int:
        """UTF-8 length of the compact JSON array of all messages (what to_json() returns)."""
        n = len(self._entries)
        return self._sizes + max(n - 1, 0) + 2  # brackets, and a comma between messages

    def add(self, role: str, content: str, timestamp: float | None = None) -> None:
        """Append a message; `timestamp` defaults to the clock (given when restoring)."""
        if not isinstance(role, str) or role not in ROLES:
            raise ValueError(f"role must be one of {sorted(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise TypeError(f"content must be text, got {type(content).__name__}")
        stamp = self._clock() if timestamp is None else timestamp
        size = _utf8_len(_json({"role": role, "content": content, "timestamp": stamp}))
        self._entries.append(_Entry(role, content, stamp, size))
        self._sizes += size
        if len(self._entries) > self.max_messages:
            self._drop_oldest()
        if self.total_bytes > self.max_bytes:
            self._trim_for_size()

    def _drop_oldest(self) -> None:
        self._sizes -= self._entries.popleft().size

    def _trim_for_size(self) -> None:
        before = len(self._entries)
        while len(self._entries) > self.trim_to:
            self._drop_oldest()
        while self.total_bytes > self.max_bytes and len(self._entries) > 1:
            self._drop_oldest()
        log.info("history over %d bytes: dropped %d oldest messages, kept %d", self.max_bytes,
                 before - len(self._entries), len(self._entries))

    def messages(self) -> list[dict[str, Any]]:
        """Copies, oldest first: changing them does not change the history. Any thread (the
        window reads the history of a call running on a loop of its own): list() copies at once."""
        return [entry.as_dict() for entry in list(self._entries)]

    def clear(self) -> None:
        self._entries.clear()
        self._sizes = 0

    def to_json(self) -> str:
        return _json(self.messages())

    @classmethod
    def from_json(
        cls,
        text: str,
        max_messages: int = 50,
        max_bytes: int = 100 * 1024 * 1024,
        trim_to: int = 30,
        *,
        clock: Callable[[], float] = time.time,
    ) -> BoundedHistory:
        """Rebuild a history from to_json() output; the limits apply as if each were added anew."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"history is not valid JSON: {exc}") from None
        if not isinstance(data, list):
            raise ValueError("history JSON must be a list of messages")
        return cls.load(data, max_messages, max_bytes, trim_to, clock=clock)

    @classmethod
    def load(
        cls,
        messages: Iterable[Any],
        max_messages: int = 50,
        max_bytes: int = 100 * 1024 * 1024,
        trim_to: int = 30,
        *,
        clock: Callable[[], float] = time.time,
    ) -> BoundedHistory:
        """A history holding `messages` ({role, content, timestamp} dicts, e.g. a transcript's),
        within the limits as if each were added anew: a long past conversation keeps its newest."""
        history = cls(max_messages, max_bytes, trim_to, clock=clock)
        for index, item in enumerate(messages):
            role, content, stamp = _parse_message(index, item)
            history.add(role, content, stamp)
        return history


def _parse_message(index: int, item: Any) -> tuple[str, str, float]:
    where = f"history message {index}"
    if not isinstance(item, dict):
        raise ValueError(f"{where} is not an object")
    missing = [key for key in ("role", "content", "timestamp") if key not in item]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}")
    role, content, stamp = item["role"], item["content"], item["timestamp"]
    if not isinstance(role, str) or role not in ROLES:
        raise ValueError(f"{where}: role must be one of {sorted(ROLES)}, got {role!r}")
    if not isinstance(content, str):
        raise ValueError(f"{where}: content must be text")
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or not math.isfinite(stamp):
        raise ValueError(f"{where}: timestamp must be a finite number")
    return role, content, stamp

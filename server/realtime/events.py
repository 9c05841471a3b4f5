"""Client events on `oai-events`: parsed and checked here, with no I/O.

A message that cannot be acted on raises EventError, which the call turns into an
`error` event (the call goes on). Server events are built by server_event(), which
gives each its event_id.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

MAX_MESSAGE_BYTES = 64 * 1024

CLIENT_EVENT_TYPES = frozenset({
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.clear",
    "input_audio_buffer.commit",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
    "conversation.item.create",
})
ROLES = ("user", "assistant", "system")
TEXT_PARTS = ("input_text", "output_text", "text")


class EventError(ValueError):
    def __init__(self, message: str, *, code: str, param: str | None = None, event_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param
        self.event_id = event_id

    def to_event(self) -> dict[str, Any]:
        return server_event("error", error={"type": "invalid_request_error", "code": self.code,
                                            "message": str(self), "param": self.param,
                                            "event_id": self.event_id})


@dataclass(frozen=True)
class ClientEvent:
    type: str
    event_id: str | None
    body: dict[str, Any]


@dataclass(frozen=True)
class ConversationText:
    """The text of a conversation.item.create message."""

    role: str
    text: str


@dataclass(frozen=True)
class FunctionOutput:
    """The client's answer to a function call: a conversation.item.create of type function_call_output."""

    call_id: str
    output: str


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def server_event(type_: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "event_id": new_id("event"), **fields}


def parse_client_event(message: str | bytes) -> ClientEvent:
    if isinstance(message, bytes):
        raise EventError("Binary messages are not supported; send JSON text.", code="invalid_message")
    if len(message.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES:
        raise EventError(f"The message is larger than {MAX_MESSAGE_BYTES // 1024} KB.", code="message_too_large")
    try:
        raw = json.loads(message)
    except json.JSONDecodeError as exc:
        raise EventError(f"The message is not valid JSON: {exc}.", code="invalid_json") from exc
    except RecursionError as exc:  # nesting deeper than Python's parser goes
        raise EventError("The message nests too deeply to be an event.", code="invalid_json") from exc
    if not isinstance(raw, dict):
        raise EventError("An event must be a JSON object.", code="invalid_event")
    event_id = raw.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise EventError("'event_id' must be a string.", code="invalid_type", param="event_id")
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise EventError("An event needs a string 'type'.", code="invalid_type", param="type", event_id=event_id)
    if kind not in CLIENT_EVENT_TYPES:
        raise EventError(f"Unknown event type {kind[:80]!r}.", code="unknown_event_type", param="type",
                         event_id=event_id)
    return ClientEvent(kind, event_id, raw)


def conversation_text(event: ClientEvent) -> ConversationText:
    """The role and text of a conversation.item.create; EventError on a wrong shape."""
    def bad(message: str, param: str) -> EventError:
        return EventError(message, code="invalid_value", param=param, event_id=event.event_id)

    item = event.body.get("item")
    if not isinstance(item, dict):
        raise bad("'item' must be an object.", "item")
    if item.get("type", "message") != "message":
        raise bad("Only items of type 'message' are supported.", "item.type")
    role = item.get("role")
    if role not in ROLES:
        raise bad(f"'item.role' must be one of {', '.join(ROLES)}.", "item.role")
    content = item.get("content")
    if not isinstance(content, list) or not content:
        raise bad("'item.content' must be a non-empty list.", "item.content")
    texts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in TEXT_PARTS:
            raise bad(f"'item.content[{i}]' must be a text part ({', '.join(TEXT_PARTS)}).", f"item.content[{i}]")
        text = part.get("text", part.get("transcript"))
        if not isinstance(text, str):
            raise bad(f"'item.content[{i}].text' must be a string.", f"item.content[{i}].text")
        texts.append(text)
    return ConversationText(role, " ".join(texts))


def item_type(event: ClientEvent) -> str:
    """The type of a conversation.item.create's item ("message" when absent or not a string)."""
    item = event.body.get("item")
    kind = item.get("type", "message") if isinstance(item, dict) else "message"
    return kind if isinstance(kind, str) else "message"


def function_output(event: ClientEvent) -> FunctionOutput:
    """The call_id and output of a function_call_output item; EventError on a wrong shape."""
    item = event.body.get("item")
    assert isinstance(item, dict)  # item_type() said function_call_output
    for name in ("call_id", "output"):
        if not isinstance(item.get(name), str):
            raise EventError(f"'item.{name}' must be a string.", code="invalid_value", param=f"item.{name}",
                             event_id=event.event_id)
    return FunctionOutput(item["call_id"], item["output"])


def optional_object(event: ClientEvent, name: str) -> dict[str, Any]:
    """A field that may be absent or an object (e.g. response.create's 'response')."""
    value = event.body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EventError(f"'{name}' must be an object.", code="invalid_type", param=name, event_id=event.event_id)
    return value

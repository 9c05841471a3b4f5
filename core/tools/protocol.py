"""The wire events of function tools (OpenAI Realtime), sans I/O.

The model's call shows up to three times: `response.function_call_arguments.done`,
`response.output_item.done` (a `function_call` item) and again in `response.done`'s output.
ToolCallFlow hands each call out once, as soon as the first of these arrives, and says
when to ask for the next response: after `response.done` (status completed) AND once every
call of that response has its `function_call_output` sent. One `response.create` per
response, however many parallel calls it made; none after a cancelled response (the user
spoke over it and their new turn brings its own response).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FunctionCall:
    call_id: str
    name: str
    arguments: str  # JSON text, as the model wrote it
    response_id: str | None = None
    item_id: str | None = None


@dataclass(frozen=True)
class ToolStep:
    """What one server event means for tools: calls to start, events to send now."""

    start: tuple[FunctionCall, ...] = ()
    send: tuple[dict[str, Any], ...] = ()


@dataclass
class _Response:
    call_ids: set[str] = field(default_factory=set)
    status: str | None = None  # set by response.done
    answered: bool = False


def session_tools_update(tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A session.update declaring `tools` (ToolRegistry.session_tools()); sent again when they change."""
    return {
        "type": "session.update",
        "session": {"type": "realtime", "tools": [dict(tool) for tool in tools], "tool_choice": "auto"},
    }


def function_call_output(call_id: str, output: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": call_id, "output": output},
    }


def response_create() -> dict[str, Any]:
    return {"type": "response.create"}


def _call_from_item(item: Mapping[str, Any], response_id: str | None) -> FunctionCall | None:
    if item.get("type") != "function_call" or item.get("status") == "incomplete":
        return None
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not isinstance(name, str):
        log.warning("function_call item without call_id or name: ignored")
        return None
    arguments = item.get("arguments")
    return FunctionCall(
        call_id=call_id,
        name=name,
        arguments=arguments if isinstance(arguments, str) else "",
        response_id=response_id,
        item_id=item.get("id") if isinstance(item.get("id"), str) else None,
    )


@dataclass
class ToolCallFlow:
    _seen: set[str] = field(default_factory=set)  # every call_id ever handed out
    _sent: set[str] = field(default_factory=set)  # call_ids whose output went out
    _responses: dict[str, _Response] = field(default_factory=dict)
    _response_of: dict[str, str] = field(default_factory=dict)  # call_id -> response_id

    def on_event(self, event: Mapping[str, Any]) -> ToolStep:
        kind = event.get("type")
        if kind == "response.function_call_arguments.done":
            item = {**event, "type": "function_call", "id": event.get("item_id")}
            call = _call_from_item(item, event.get("response_id"))
            return ToolStep(start=self._note([call]))
        if kind == "response.output_item.done":
            item = event.get("item")
            if not isinstance(item, Mapping):
                return ToolStep()
            return ToolStep(start=self._note([_call_from_item(item, event.get("response_id"))]))
        if kind == "response.done":
            return self._on_response_done(event.get("response"))
        return ToolStep()

    def on_output(self, call_id: str, output: str) -> tuple[dict[str, Any], ...]:
        """The events that deliver a call's output (and, if it was the last one, the next response)."""
        if call_id not in self._seen or call_id in self._sent:
            log.warning("output for unknown or already answered call %s: dropped", call_id)
            return ()
        self._sent.add(call_id)
        events: list[dict[str, Any]] = [function_call_output(call_id, output)]
        response_id = self._response_of.get(call_id)
        if response_id is not None:
            events.extend(self._maybe_respond(response_id))
        return tuple(events)

    def pending(self) -> int:
        """Calls handed out whose output has not been sent."""
        return len(self._seen - self._sent)

    def _note(self, calls: Sequence[FunctionCall | None]) -> tuple[FunctionCall, ...]:
        new: list[FunctionCall] = []
        for call in calls:
            if call is None:
                continue
            if call.response_id is not None:
                self._responses.setdefault(call.response_id, _Response()).call_ids.add(call.call_id)
                self._response_of[call.call_id] = call.response_id
            if call.call_id not in self._seen:
                self._seen.add(call.call_id)
                new.append(call)
        return tuple(new)

    def _on_response_done(self, response: Any) -> ToolStep:
        if not isinstance(response, Mapping) or not isinstance(response.get("id"), str):
            return ToolStep()
        response_id = response["id"]
        items = response.get("output") or []
        calls = [_call_from_item(item, response_id) for item in items if isinstance(item, Mapping)]
        start = self._note(calls)
        if response_id not in self._responses:
            return ToolStep(start=start)  # a response without calls: nothing for tools to do
        self._responses[response_id].status = response.get("status")
        return ToolStep(start=start, send=self._maybe_respond(response_id))

    def _maybe_respond(self, response_id: str) -> tuple[dict[str, Any], ...]:
        state = self._responses.get(response_id)
        if state is None or state.answered or state.status is None:
            return ()
        if not state.call_ids <= self._sent:
            return ()
        state.answered = True
        for call_id in state.call_ids:
            self._response_of.pop(call_id, None)
        del self._responses[response_id]
        if state.status != "completed":
            log.info("response %s ended %s: its tool outputs are sent, no new response asked", response_id, state.status)
            return ()
        return (response_create(),)

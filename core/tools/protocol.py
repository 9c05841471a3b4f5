"""When to answer the model's tool calls, and when to ask for the next response. Sans I/O.

The model's call shows up to three times: `response.function_call_arguments.done`,
`response.output_item.done` (a `function_call` item) and again in `response.done`'s
output; core/call/protocol.py turns each into a typed event. ToolCallFlow hands each
call out once, as soon as the first of these arrives, and says when to ask for the
next response: after `response.done` (status completed) AND once every call of that
response has its `function_call_output` sent. One `response.create` per response,
however many parallel calls it made; none after a cancelled response (the user spoke
over it and their new turn brings its own response).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.call.protocol import (ClientEvent, CreateResponse, FunctionCall, FunctionCallOutput, FunctionCallSeen,
                                ResponseDone, ServerEvent)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolStep:
    """What one server event means for tools: calls to start, events to send now."""

    start: tuple[FunctionCall, ...] = ()
    send: tuple[ClientEvent, ...] = ()


@dataclass
class _Response:
    call_ids: set[str] = field(default_factory=set)
    status: str | None = None  # set by response.done
    answered: bool = False


@dataclass
class ToolCallFlow:
    _seen: set[str] = field(default_factory=set)  # every call_id ever handed out
    _sent: set[str] = field(default_factory=set)  # call_ids whose output went out
    _responses: dict[str, _Response] = field(default_factory=dict)
    _response_of: dict[str, str] = field(default_factory=dict)  # call_id -> response_id

    def on_event(self, event: ServerEvent) -> ToolStep:
        if isinstance(event, FunctionCallSeen):
            return ToolStep(start=self._note([event.call]))
        if isinstance(event, ResponseDone):
            return self._on_response_done(event)
        return ToolStep()

    def on_output(self, call_id: str, output: str) -> tuple[ClientEvent, ...]:
        """The events that deliver a call's output (and, if it was the last one, the next response)."""
        if call_id not in self._seen or call_id in self._sent:
            log.warning("output for unknown or already answered call %s: dropped", call_id)
            return ()
        self._sent.add(call_id)
        events: list[ClientEvent] = [FunctionCallOutput(call_id, output)]
        response_id = self._response_of.get(call_id)
        if response_id is not None:
            events.extend(self._maybe_respond(response_id))
        return tuple(events)

    def pending(self) -> int:
        """Calls handed out whose output has not been sent."""
        return len(self._seen - self._sent)

    def _note(self, calls: Sequence[FunctionCall]) -> tuple[FunctionCall, ...]:
        new: list[FunctionCall] = []
        for call in calls:
            if call.response_id is not None:
                self._responses.setdefault(call.response_id, _Response()).call_ids.add(call.call_id)
                self._response_of[call.call_id] = call.response_id
            if call.call_id not in self._seen:
                self._seen.add(call.call_id)
                new.append(call)
        return tuple(new)

    def _on_response_done(self, done: ResponseDone) -> ToolStep:
        if done.id is None:
            return ToolStep()
        start = self._note(done.calls)
        if done.id not in self._responses:
            return ToolStep(start=start)  # a response without calls: nothing for tools to do
        self._responses[done.id].status = done.status
        return ToolStep(start=start, send=self._maybe_respond(done.id))

    def _maybe_respond(self, response_id: str) -> tuple[ClientEvent, ...]:
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
        return (CreateResponse(),)

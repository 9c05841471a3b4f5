"""What goes on inside a connected call: turns, transcripts, tool calls, usage.

The turn table (turn.py) decides what a press, a release or a server event means;
this object carries out each Outcome through the engine's `send`, the playout stage
and the observers, keeps the conversation (history and transcript), runs the model's
tool calls and sums the tokens used. It outlives connections: the engine resets it
when one ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from core.call import protocol
from core.call.conversation import Conversation
from core.call.events import (AssistantSpeaking, EngineEvent, Hint, ModeChanged, ToolActivity, TranscriptDelta,
                              UsageUpdated)
from core.call.tool_runner import ToolRunner
from core.call.turn import Outcome, Turn
from core.playout import Playout
from core.tools.registry import Approver, ToolRegistry
from core.usage import Usage

log = logging.getLogger(__name__)

Send = Callable[[protocol.ClientEvent], bool]


class Dialogue:
    def __init__(self, *, turn: Turn, conversation: Conversation, usage: Usage, tools: ToolRegistry,
                 approve: Approver, playout: Playout, send: Send, emit: Callable[[EngineEvent], None],
                 record: Callable[[str, float], None], drain: Callable[[float], Awaitable[bool]],
                 discard: Callable[[], None]) -> None:
        self.turn = turn
        self.conversation = conversation
        self.usage = usage
        self.tools = ToolRunner(tools, send, self._tool_activity, approve)
        self._playout = playout
        self._send = send
        self._emit = emit
        self._record = record
        self._drain = drain
        self._discard = discard
        self._draining: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._settle: asyncio.TimerHandle | None = None
        self._speaking = False  # what observers were last told

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that runs the call: timers, and hand-overs from the sound card's thread."""
        self._loop = loop
        self.tools.bind(loop)

    # --- the user's controls --------------------------------------------------------------

    def press(self) -> None:
        self.apply(self.turn.press(time.monotonic()))

    def release(self) -> None:
        self.apply(self.turn.release(time.monotonic()))

    def voice_barge_in(self) -> None:
        """The microphone path heard the user over the answer (hands-free)."""
        self.apply(self.turn.voice_barge_in(time.monotonic()))

    def send_text(self, text: str) -> None:
        """A typed user turn: into the conversation and history, then an answer is asked for."""
        text = text.strip()
        if not text or not self._send(protocol.CreateMessage("user", text)):
            return
        self.conversation.remember("user", text)
        self._emit(TranscriptDelta("user", text, True, f"text-{uuid.uuid4().hex[:8]}"))
        self.apply(self.turn.text_turn(time.monotonic()))

    # --- carrying out what the table decided ----------------------------------------------

    def apply(self, outcome: Outcome) -> None:
        if outcome.fresh_input:
            self._discard()
        if outcome.drain_until is not None and self._loop is not None:
            self.turn.draining = True
            self._draining = self._loop.create_task(self._send_after_drain(outcome.send, outcome.drain_until))
        else:
            for event in outcome.send:
                self._send(event)
        if outcome.cut_playout:
            self._playout.clear()
        if outcome.expect_answer:
            self._playout.expect_audio()
        if outcome.latency_ms is not None:
            self._record("response_latency", outcome.latency_ms)
        if outcome.hint:
            self._emit(Hint(outcome.hint))
        if outcome.settle_at is not None and self._loop is not None:
            if self._settle is not None:
                self._settle.cancel()
            self._settle = self._loop.call_at(outcome.settle_at, self._settle_turn)
        self._tell_speaking(self.turn.assistant_speaking)

    async def _send_after_drain(self, events: tuple[protocol.ClientEvent, ...], until: float) -> None:
        """The last word first: what was heard before the release goes out, then the commit."""
        try:
            if not await self._drain(until):
                log.info("the microphone did not deliver up to the release in time; committing what came")
        except Exception:  # the turn must still be committed: a late word is better than no answer
            log.exception("draining the microphone failed")
        finally:
            self.turn.draining = False
        for event in events:
            self._send(event)

    def _settle_turn(self) -> None:
        self._settle = None
        self.apply(self.turn.settle(time.monotonic()))

    def _tell_speaking(self, speaking: bool) -> None:
        if speaking != self._speaking:
            self._speaking = speaking
            self._emit(AssistantSpeaking(speaking))

    def first_audible(self, play_time: float) -> None:
        """From the playout's reader (often PortAudio's thread): the answer is audible."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: self.apply(self.turn.answer_audible(play_time)))

    def accepts_audio(self) -> bool:
        return self.turn.accepts_audio(time.monotonic())

    # --- what the server says ---------------------------------------------------------------

    def handle(self, event: protocol.ServerEvent) -> None:
        was_hands_free = self.turn.hands_free
        self.apply(self.turn.on_server_event(event, time.monotonic()))
        self.tools.on_server_event(event)
        if isinstance(event, protocol.SessionChanged) and event.hands_free != was_hands_free:
            self._emit(ModeChanged(event.hands_free))
        elif isinstance(event, protocol.Transcript):
            if event.final and event.text:
                self.conversation.remember(event.role, event.text)
            self._emit(TranscriptDelta(event.role, event.text, event.final, event.turn_id))
        elif isinstance(event, protocol.ResponseDone) and event.usage:
            self.usage.add(event.usage)
            self._emit(UsageUpdated(dict(self.usage.tokens), self.usage.cost_usd))

    def _tool_activity(self, activity: ToolActivity) -> None:
        if activity.output is not None:
            self.conversation.note_tool(activity.name, activity.arguments, activity.output)
        self._emit(activity)

    def reset(self) -> None:
        """The connection ended: no turn, no pending settle, no tool call survives it."""
        if self._settle is not None:
            self._settle.cancel()
            self._settle = None
        if self._draining is not None:
            self._draining.cancel()
            self._draining = None
        self.turn.reset()
        self.tools.reset()
        self._tell_speaking(False)

    async def close(self) -> None:
        self.reset()
        await self.tools.close()
        self.conversation.close()

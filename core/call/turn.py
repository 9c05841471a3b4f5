"""Whose turn it is: push-to-talk, hands-free and barge-in as one transition table.

Sans I/O, like h11: every method takes the time (`now`, seconds on the engine's
monotonic clock) and RETURNS what should happen — client events to send, the local
playout to cut, a latency to record, a hint for the user — and never does it itself.
The engine applies the Outcome. Every rule about turns lives here, in TRANSITIONS
and the methods that walk it; anything not in the table is ignored, not guessed.

Push-to-talk on a real desktop: X11 sends a held key as release/press pairs every
40 ms after the autorepeat delay, and Qt flags most of them as NOT autorepeat. So a
release is only a candidate: the turn ends when no press follows within
RELEASE_GRACE_S (the engine calls `settle` when that time has passed). A hold too
short to carry speech sends nothing and says why, instead of provoking a server
error about an empty buffer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from core.call.protocol import (
    AudioStarted,
    AudioStopped,
    CancelResponse,
    ClearInput,
    ClearOutput,
    ClientEvent,
    CommitInput,
    CreateResponse,
    ResponseDone,
    ServerError,
    ServerEvent,
    SessionChanged,
    SpeechStarted,
    SpeechStopped,
)

# A release followed by a press within this long is the same hold (X autorepeat pairs
# arrive together, 40 ms apart at the default 25 Hz rate).
RELEASE_GRACE_S = 0.05
# Shorter than this carries no question (OpenAI refuses a commit under 100 ms of audio).
MIN_HOLD_S = 0.15
# After a barge-in, audio of the cut answer still in flight is dropped until the server
# confirms the cut, at most this long.
BARGE_IN_MUTE_S = 1.0

SHORT_HOLD_HINT = "Hold the button (or Space) while you speak, and let go when you are done."


class Phase(enum.Enum):
    IDLE = "idle"  # nobody speaks; push-to-talk: the microphone is gated
    HOLDING = "holding"  # push-to-talk held: the microphone goes out
    RELEASING = "releasing"  # released, but a press may still follow (autorepeat)
    USER_SPEAKING = "user_speaking"  # hands-free: the server heard speech start
    WAITING = "waiting"  # the turn is over; the answer is asked for, not yet audible
    ANSWERING = "answering"  # the answer's audio is playing


class Input(enum.Enum):
    PRESS = "press"
    RELEASE = "release"
    SETTLE = "settle"  # the release grace is over
    SPEECH_STARTED = "speech_started"
    SPEECH_STOPPED = "speech_stopped"
    AUDIO_STARTED = "audio_started"
    AUDIO_STOPPED = "audio_stopped"
    RESPONSE_DONE = "response_done"
    VOICE_BARGE_IN = "voice_barge_in"  # the local detector heard the user over the answer
    INTERRUPT = "interrupt"  # hands-free: the button stops the answer; the server's VAD ends turns
    TEXT_TURN = "text_turn"  # a typed turn was sent
    RESET = "reset"  # a new connection: nothing of the old turn survives


P, I = Phase, Input
# (phase, input) -> next phase. A pair not listed leaves the phase as it is and does nothing.
TRANSITIONS: dict[tuple[Phase, Input], Phase] = {
    (P.IDLE, I.PRESS): P.HOLDING,
    (P.WAITING, I.PRESS): P.HOLDING,  # barge-in before the answer is audible
    (P.ANSWERING, I.PRESS): P.HOLDING,  # barge-in
    (P.USER_SPEAKING, I.PRESS): P.HOLDING,
    (P.RELEASING, I.PRESS): P.HOLDING,  # an autorepeat pair: the same hold goes on
    (P.HOLDING, I.RELEASE): P.RELEASING,
    (P.RELEASING, I.SETTLE): P.WAITING,  # or IDLE for a hold too short: see settle()
    (P.IDLE, I.SPEECH_STARTED): P.USER_SPEAKING,
    (P.WAITING, I.SPEECH_STARTED): P.USER_SPEAKING,
    (P.ANSWERING, I.SPEECH_STARTED): P.USER_SPEAKING,  # the server's VAD heard a barge-in
    (P.USER_SPEAKING, I.SPEECH_STOPPED): P.WAITING,
    (P.IDLE, I.AUDIO_STARTED): P.ANSWERING,
    (P.WAITING, I.AUDIO_STARTED): P.ANSWERING,
    (P.ANSWERING, I.AUDIO_STOPPED): P.IDLE,
    (P.WAITING, I.RESPONSE_DONE): P.IDLE,  # an answer without audio (or a failed one)
    # The local decider fires only while an answer is audible, whatever the server's VAD
    # said last (its speech_started may have come first, or the audio before its "started").
    (P.ANSWERING, I.VOICE_BARGE_IN): P.USER_SPEAKING,
    (P.WAITING, I.VOICE_BARGE_IN): P.USER_SPEAKING,
    (P.USER_SPEAKING, I.VOICE_BARGE_IN): P.USER_SPEAKING,
    (P.WAITING, I.INTERRUPT): P.IDLE,
    (P.ANSWERING, I.INTERRUPT): P.IDLE,
    (P.IDLE, I.TEXT_TURN): P.WAITING,
    (P.ANSWERING, I.TEXT_TURN): P.WAITING,
    (P.WAITING, I.TEXT_TURN): P.WAITING,
}
for _phase in Phase:
    TRANSITIONS[(_phase, I.RESET)] = P.IDLE
del _phase


@dataclass(frozen=True)
class Outcome:
    """What the engine must do after one input; empty when nothing."""

    send: tuple[ClientEvent, ...] = ()
    cut_playout: bool = False  # stop the answer's audio locally, at once
    mute_until: float | None = None  # drop incoming answer audio until then (barge-in)
    settle_at: float | None = None  # call settle() at this time
    latency_ms: float | None = None  # response_latency, measured now
    expect_answer: bool = False  # an answer is now awaited: arm the playout's first-audible mark
    # Send `send` only once everything the microphone heard before this time went out (the last word).
    drain_until: float | None = None
    fresh_input: bool = False  # a new turn: drop whatever the microphone heard before it
    hint: str | None = None  # something the user should read (not a problem)


NOTHING = Outcome()


@dataclass
class Turn:
    """The turn-taking state of one call (it survives reconnects; RESET drops the turn)."""

    hands_free: bool = False
    phase: Phase = Phase.IDLE
    pressed_at: float | None = None
    released_at: float | None = None
    # When the user's turn ended (release, or the server's end of speech): latency starts here.
    answer_wanted_at: float | None = None
    muted_until: float = 0.0
    draining: bool = False  # the turn ended; what was said before the release still goes out

    # --- derived ----------------------------------------------------------------------

    @property
    def mic_open(self) -> bool:
        """Whether microphone audio goes out (silence otherwise)."""
        return self.hands_free or self.draining or self.phase in (Phase.HOLDING, Phase.RELEASING)

    @property
    def assistant_speaking(self) -> bool:
        return self.phase is Phase.ANSWERING

    @property
    def answer_pending(self) -> bool:
        return self.phase in (Phase.WAITING, Phase.ANSWERING)

    def accepts_audio(self, now: float) -> bool:
        """Whether answer audio arriving now may play (not in a barge-in's mute window)."""
        return now >= self.muted_until

    # --- the table --------------------------------------------------------------------

    def _move(self, event: Input) -> Phase | None:
        """Walk TRANSITIONS; the new phase, or None when the table has no such move."""
        new = TRANSITIONS.get((self.phase, event))
        if new is None:
            return None
        self.phase = new
        return new

    def _barge_in(self, now: float) -> Outcome:
        """The user takes the floor while an answer is asked for or playing."""
        self.answer_wanted_at = None
        self.muted_until = now + BARGE_IN_MUTE_S
        return Outcome(send=(CancelResponse(), ClearOutput()), cut_playout=True, mute_until=self.muted_until)

    # --- the user's controls ------------------------------------------------------------

    def press(self, now: float) -> Outcome:
        """Push-to-talk down (a key, the button, or an autorepeat press).

        In hands-free the microphone is always open and the server's VAD ends turns: the
        button only interrupts an answer."""
        if self.hands_free:
            return self._barge_in(now) if self._move(I.INTERRUPT) is not None else NOTHING
        old = self.phase
        if self._move(I.PRESS) is None:
            return NOTHING
        if old is Phase.RELEASING:
            self.released_at = None  # the hold never ended
            return NOTHING
        self.pressed_at, self.released_at = now, None
        barge = self._barge_in(now) if old in (Phase.WAITING, Phase.ANSWERING) else NOTHING
        # A fresh input buffer for the new turn, here and on the server.
        return Outcome(send=barge.send + (ClearInput(),), cut_playout=barge.cut_playout, mute_until=barge.mute_until,
                       fresh_input=True)

    def release(self, now: float) -> Outcome:
        """Push-to-talk up: only a candidate end of the turn until settle()."""
        if self._move(I.RELEASE) is None:
            return NOTHING
        self.released_at = now
        return Outcome(settle_at=now + RELEASE_GRACE_S)

    def settle(self, now: float) -> Outcome:
        """The grace after a release is over: the turn ends (or was too short to count)."""
        if self.phase is not Phase.RELEASING or self.released_at is None:
            return NOTHING
        if now < self.released_at + RELEASE_GRACE_S:
            # Too early (Qt's timers, which run asyncio's under qasync, may fire a little early).
            return Outcome(settle_at=self.released_at + RELEASE_GRACE_S)
        released_at = self.released_at
        pressed_at = self.pressed_at if self.pressed_at is not None else released_at
        self._move(I.SETTLE)
        if released_at - pressed_at < MIN_HOLD_S:
            self.phase = Phase.IDLE
            return Outcome(hint=SHORT_HOLD_HINT)
        self.answer_wanted_at = released_at
        return Outcome(send=(CommitInput(), CreateResponse()), expect_answer=True, drain_until=released_at)

    def text_turn(self, now: float) -> Outcome:
        """A typed turn was sent: an answer is asked for; one still playing is cut."""
        old = self.phase
        if self._move(I.TEXT_TURN) is None:
            return NOTHING
        barge = self._barge_in(now) if old is Phase.ANSWERING else NOTHING
        self.answer_wanted_at = now
        return Outcome(send=barge.send + (CreateResponse(),), cut_playout=barge.cut_playout,
                       mute_until=barge.mute_until, expect_answer=True)

    def voice_barge_in(self, now: float) -> Outcome:
        """The local detector heard the user speak over the answer (hands-free)."""
        if not self.hands_free or self._move(I.VOICE_BARGE_IN) is None:
            return NOTHING
        return self._barge_in(now)

    def set_hands_free(self, on: bool) -> None:
        """A switch mid-call: a push-to-talk hold in progress is dropped, not committed."""
        self.hands_free = on
        if on and self.phase in (Phase.HOLDING, Phase.RELEASING):
            self.phase = Phase.IDLE

    def reset(self) -> None:
        """A new connection: the old turn, its mute window and its pending answer are gone."""
        self._move(I.RESET)
        self.pressed_at = self.released_at = self.answer_wanted_at = None
        self.muted_until = 0.0
        self.draining = False

    # --- what the server and the speaker say ---------------------------------------------

    def on_server_event(self, event: ServerEvent, now: float) -> Outcome:
        if isinstance(event, SessionChanged):
            self.hands_free = event.hands_free  # the window shows the mode the server is in
            return NOTHING
        if isinstance(event, SpeechStarted):
            if not self.hands_free:
                return NOTHING
            old = self.phase
            if self._move(I.SPEECH_STARTED) is None:
                return NOTHING
            # The server's VAD cancels its own answer; the answer already here must stop too.
            return Outcome(cut_playout=True) if old is Phase.ANSWERING else NOTHING
        if isinstance(event, SpeechStopped):
            if self.hands_free and self._move(I.SPEECH_STOPPED) is not None:
                self.answer_wanted_at = now
                return Outcome(expect_answer=True)
            return NOTHING
        if isinstance(event, AudioStarted):
            self._move(I.AUDIO_STARTED)
            return NOTHING
        if isinstance(event, AudioStopped):
            self.muted_until = 0.0
            self._move(I.AUDIO_STOPPED)
            return NOTHING
        if isinstance(event, ResponseDone):
            # A response that only called tools is not the answer: that comes after their outputs.
            if not event.calls and self._move(I.RESPONSE_DONE) is not None:
                self.answer_wanted_at = None
            return NOTHING
        if isinstance(event, ServerError) and self.phase is Phase.WAITING and self.answer_wanted_at is not None:
            # The turn was refused (e.g. an empty buffer): no answer will come.
            self._move(I.RESPONSE_DONE)
            self.answer_wanted_at = None
        return NOTHING

    def answer_audible(self, played_at: float) -> Outcome:
        """The first audible sample of an answer reached the speaker at `played_at`."""
        if self.answer_wanted_at is None:
            return NOTHING
        latency = max(0.0, played_at - self.answer_wanted_at) * 1000
        self.answer_wanted_at = None
        if self.phase is Phase.WAITING:  # some servers never send output_audio_buffer.started
            self._move(I.AUDIO_STARTED)
        return Outcome(latency_ms=latency)

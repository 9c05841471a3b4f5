"""The call's life: the whole transition table, observers, and what the user reads."""

from __future__ import annotations

import json
import logging
from itertools import product

import pytest

from core.call.state import ALLOWED_TRANSITIONS, CallLife, CallState, IllegalTransition, Phase

# Written out by hand (not derived from ALLOWED_TRANSITIONS) so a change to the table fails here.
EXPECTED_ALLOWED = {
    (Phase.IDLE, Phase.CONNECTING),
    (Phase.CONNECTING, Phase.CONNECTED),
    (Phase.CONNECTING, Phase.RECONNECTING),
    (Phase.CONNECTING, Phase.ENDED),
    (Phase.CONNECTED, Phase.RECONNECTING),
    (Phase.CONNECTED, Phase.ENDED),
    (Phase.RECONNECTING, Phase.CONNECTING),
    (Phase.RECONNECTING, Phase.ENDED),
    (Phase.ENDED, Phase.CONNECTING),
}

# A shortest legal path from IDLE to each phase.
PATH_TO = {
    Phase.IDLE: [],
    Phase.CONNECTING: [Phase.CONNECTING],
    Phase.CONNECTED: [Phase.CONNECTING, Phase.CONNECTED],
    Phase.RECONNECTING: [Phase.CONNECTING, Phase.RECONNECTING],
    Phase.ENDED: [Phase.CONNECTING, Phase.ENDED],
}


def move(life: CallLife, phase: Phase) -> CallState:
    if phase is Phase.CONNECTING:
        return life.connecting()
    if phase is Phase.CONNECTED:
        return life.connected()
    if phase is Phase.RECONNECTING:
        return life.reconnecting(1, 5, 1.0)
    if phase is Phase.ENDED:
        return life.ended("test")
    raise AssertionError("no method moves a call back to idle")


def life_in(phase: Phase) -> CallLife:
    life = CallLife()
    for step in PATH_TO[phase]:
        move(life, step)
    assert life.state.phase is phase
    return life


def test_table_is_exactly_the_documented_one() -> None:
    declared = {(old, new) for old, news in ALLOWED_TRANSITIONS.items() for new in news}
    assert declared == EXPECTED_ALLOWED


@pytest.mark.parametrize("old,new", sorted(EXPECTED_ALLOWED, key=str))
def test_allowed_transition(old: Phase, new: Phase) -> None:
    life = life_in(old)
    state = move(life, new)
    assert life.state is state
    assert state.phase is new


FORBIDDEN = sorted(
    (pair for pair in product(Phase, Phase) if pair not in EXPECTED_ALLOWED and pair[1] is not Phase.IDLE),
    key=str,
)


@pytest.mark.parametrize("old,new", FORBIDDEN)
def test_forbidden_transition_raises_and_changes_nothing(old: Phase, new: Phase) -> None:
    life = life_in(old)
    before = life.state
    heard: list[tuple[CallState, CallState]] = []
    life.add_observer(lambda o, n: heard.append((o, n)))
    with pytest.raises(IllegalTransition) as info:
        move(life, new)
    assert life.state is before
    assert heard == []
    assert info.value.old is old and info.value.new is new
    assert old.value in str(info.value) and new.value in str(info.value)


def test_nothing_moves_back_to_idle() -> None:
    # No method exists for it and the table has no entry leading there.
    assert all(Phase.IDLE not in news for news in ALLOWED_TRANSITIONS.values())
    assert not hasattr(CallLife, "idle")


def test_observers_hear_old_and_new_in_order_and_can_unsubscribe() -> None:
    life = CallLife()
    first: list[tuple[Phase, Phase]] = []
    second: list[tuple[Phase, Phase]] = []
    life.add_observer(lambda o, n: first.append((o.phase, n.phase)))
    unsubscribe = life.add_observer(lambda o, n: second.append((o.phase, n.phase)))
    life.connecting()
    unsubscribe()
    unsubscribe()  # twice is harmless
    life.connected()
    assert first == [(Phase.IDLE, Phase.CONNECTING), (Phase.CONNECTING, Phase.CONNECTED)]
    assert second == [(Phase.IDLE, Phase.CONNECTING)]


def test_observer_that_raises_is_logged_and_others_still_hear(caplog: pytest.LogCaptureFixture) -> None:
    life = CallLife()
    heard: list[Phase] = []

    def broken(old: CallState, new: CallState) -> None:
        raise ValueError("boom")

    life.add_observer(broken)
    life.add_observer(lambda o, n: heard.append(n.phase))
    with caplog.at_level(logging.ERROR, logger="core.call.state"):
        life.connecting()
    assert life.state.phase is Phase.CONNECTING
    assert heard == [Phase.CONNECTING]
    assert any("boom" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_observer_may_unsubscribe_itself_while_notified() -> None:
    life = CallLife()
    heard: list[str] = []
    unsubscribe: list = []

    def once(old: CallState, new: CallState) -> None:
        heard.append("once")
        unsubscribe[0]()

    unsubscribe.append(life.add_observer(once))
    life.add_observer(lambda o, n: heard.append("always"))
    life.connecting()
    life.connected()
    assert heard == ["once", "always", "always"]


def test_reconnecting_carries_attempt_and_delay() -> None:
    life = life_in(Phase.CONNECTED)
    state = life.reconnecting(2, 5, 2.0)
    assert (state.attempt, state.max_attempts, state.delay) == (2, 5, 2.0)
    for bad in ((0, 5, 1.0), (6, 5, 1.0), (1, 5, -1.0)):
        with pytest.raises(ValueError):
            life_in(Phase.CONNECTED).reconnecting(*bad)


@pytest.mark.parametrize(
    "state,text",
    [
        (CallState(Phase.IDLE), "Not connected"),
        (CallState(Phase.CONNECTING), "Connecting…"),
        (CallState(Phase.CONNECTING, attempt=3, max_attempts=5), "Connecting… (attempt 3 of 5)"),
        (CallState(Phase.CONNECTED), "Connected"),
        (CallState(Phase.RECONNECTING, attempt=2, max_attempts=5, delay=4.0), "Reconnecting in 4 s, attempt 2 of 5"),
        (CallState(Phase.RECONNECTING, attempt=1, max_attempts=5, delay=0.3), "Reconnecting in 1 s, attempt 1 of 5"),
        (CallState(Phase.ENDED, reason="the server is gone"), "Call ended: the server is gone"),
        (CallState(Phase.ENDED), "Call ended"),
    ],
)
def test_describe(state: CallState, text: str) -> None:
    assert state.describe() == text


@pytest.mark.parametrize(
    "state,expected",
    [
        (CallState(Phase.IDLE), {"type": "state", "state": "idle"}),
        (CallState(Phase.CONNECTING), {"type": "state", "state": "connecting"}),
        (CallState(Phase.CONNECTING, attempt=2, max_attempts=5), {"type": "state", "state": "connecting", "attempt": 2, "max": 5}),
        (CallState(Phase.CONNECTED), {"type": "state", "state": "connected"}),
        (
            CallState(Phase.RECONNECTING, attempt=2, max_attempts=5, delay=2.0),
            {"type": "state", "state": "reconnecting", "attempt": 2, "max": 5, "delay": 2.0},
        ),
        (CallState(Phase.ENDED, reason="hung up"), {"type": "state", "state": "ended", "reason": "hung up"}),
    ],
)
def test_to_json(state: CallState, expected: dict) -> None:
    assert state.to_json() == expected
    json.dumps(state.to_json())  # one line of an events file


def test_state_is_immutable() -> None:
    state = CallState(Phase.CONNECTED)
    with pytest.raises(AttributeError):
        state.phase = Phase.ENDED  # type: ignore[misc]

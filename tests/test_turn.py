"""The turn table, sans I/O: presses, releases and server events in, outcomes out, on a fake clock."""

from __future__ import annotations

import pytest

from core.call import protocol as p
from core.call.turn import (BARGE_IN_MUTE_S, MIN_HOLD_S, NOTHING, RELEASE_GRACE_S, SHORT_HOLD_HINT, TRANSITIONS,
                            Input, Phase, Turn)

COMMIT = (p.CommitInput(), p.CreateResponse())
BARGE = (p.CancelResponse(), p.ClearOutput())


def x11_hold(turn: Turn, start: float, seconds: float, *, delay: float = 0.66, rate_hz: float = 25) -> list:
    """What Qt on X11 delivers for one held key: a press, then after the autorepeat delay a
    release+press pair every 1/rate s (mostly NOT flagged autorepeat), then the real release.
    Returns every outcome, settling whenever the engine's timer would fire."""
    outcomes = [turn.press(start)]
    t = start + delay
    while t < start + seconds:
        outcomes.append(turn.release(t))
        outcomes.append(turn.press(t + 0.0005))  # the pair arrives together
        t += 1 / rate_hz
    end = start + seconds
    outcomes.append(turn.release(end))
    outcomes.append(turn.settle(end + RELEASE_GRACE_S))
    return outcomes


def sent(outcomes: list) -> list:
    return [event for outcome in outcomes for event in outcome.send]


@pytest.mark.parametrize("seconds", [0.3, 0.7, 1.5, 3.0, 10.0])
def test_one_physical_hold_is_exactly_one_turn_whatever_autorepeat_does(seconds):
    turn = Turn()
    outcomes = x11_hold(turn, 100.0, seconds)
    assert sent(outcomes) == [p.ClearInput(), *COMMIT]
    assert turn.phase is Phase.WAITING
    assert turn.answer_wanted_at == pytest.approx(100.0 + seconds)  # latency counts from the real release


def test_the_microphone_stays_open_through_autorepeat_pairs_and_the_grace():
    turn = Turn()
    turn.press(0.0)
    turn.release(1.0)
    assert turn.mic_open  # the tail of the last word is still going out
    turn.press(1.001)
    assert turn.mic_open and turn.phase is Phase.HOLDING
    turn.release(2.0)
    early = turn.settle(2.0 + RELEASE_GRACE_S / 2)  # a timer that fired early: nothing yet, ask again
    assert early.send == () and early.settle_at == pytest.approx(2.0 + RELEASE_GRACE_S)
    assert turn.settle(2.0 + RELEASE_GRACE_S).send == COMMIT
    assert not turn.mic_open


def test_a_press_after_the_grace_is_a_new_turn():
    turn = Turn()
    turn.press(0.0)
    turn.release(1.0)
    turn.settle(1.0 + RELEASE_GRACE_S)
    outcome = turn.press(1.0 + 2 * RELEASE_GRACE_S)
    assert outcome.send == BARGE + (p.ClearInput(),)  # the answer asked for is cut
    assert outcome.cut_playout and outcome.mute_until == pytest.approx(1.0 + 2 * RELEASE_GRACE_S + BARGE_IN_MUTE_S)


def test_a_hold_too_short_for_speech_sends_nothing_and_says_why():
    turn = Turn()
    turn.press(0.0)
    turn.release(MIN_HOLD_S / 2)
    outcome = turn.settle(MIN_HOLD_S / 2 + RELEASE_GRACE_S)
    assert outcome.send == () and outcome.hint == SHORT_HOLD_HINT
    assert turn.phase is Phase.IDLE and turn.answer_wanted_at is None


@pytest.mark.parametrize("phase, event, expected", [
    (Phase.IDLE, Input.RELEASE, Phase.IDLE),  # a release with no press (key released outside)
    (Phase.WAITING, Input.RELEASE, Phase.WAITING),
    (Phase.IDLE, Input.SETTLE, Phase.IDLE),
    (Phase.HOLDING, Input.PRESS, Phase.HOLDING),  # a flagged-autorepeat press is harmless too
])
def test_moves_not_in_the_table_change_nothing(phase, event, expected):
    assert (phase, event) not in TRANSITIONS
    turn = Turn(phase=phase)
    outcome = {Input.RELEASE: turn.release, Input.SETTLE: turn.settle, Input.PRESS: turn.press}[event](5.0)
    assert outcome is NOTHING and turn.phase is expected


def test_barge_in_while_the_answer_plays_mutes_the_rest_until_the_server_confirms():
    turn = Turn()
    x11_hold(turn, 0.0, 1.0)
    turn.on_server_event(p.AudioStarted(), 1.3)
    assert turn.assistant_speaking
    outcome = turn.press(2.0)
    assert outcome.send == BARGE + (p.ClearInput(),) and outcome.cut_playout
    assert not turn.accepts_audio(2.5)
    turn.on_server_event(p.AudioStopped(cut=True), 2.1)
    assert turn.accepts_audio(2.2)


def test_response_latency_runs_from_the_release_to_the_first_audible_sample():
    turn = Turn()
    x11_hold(turn, 0.0, 2.0)
    assert turn.answer_audible(2.18).latency_ms == pytest.approx(180)
    assert turn.answer_audible(2.5) is NOTHING  # once per answer


def test_hands_free_measures_every_turn_from_the_end_of_speech():
    turn = Turn(hands_free=True)
    latencies = []
    for start in (0.0, 10.0, 20.0):
        turn.on_server_event(p.SpeechStarted(), start)
        assert turn.on_server_event(p.SpeechStopped(), start + 1.0).expect_answer
        turn.on_server_event(p.AudioStarted(), start + 1.1)
        latencies.append(turn.answer_audible(start + 1.2).latency_ms)
        turn.on_server_event(p.AudioStopped(cut=False), start + 3.0)
    assert latencies == [pytest.approx(200)] * 3


def test_hands_free_speech_over_the_answer_cuts_it_locally():
    turn = Turn(hands_free=True)
    turn.on_server_event(p.SpeechStarted(), 0.0)
    turn.on_server_event(p.SpeechStopped(), 1.0)
    turn.on_server_event(p.AudioStarted(), 1.2)
    assert turn.on_server_event(p.SpeechStarted(), 2.0).cut_playout
    assert turn.phase is Phase.USER_SPEAKING


@pytest.mark.parametrize("phase", [Phase.ANSWERING, Phase.WAITING, Phase.USER_SPEAKING])
def test_voice_barge_in_cuts_the_answer_in_hands_free_whatever_the_vad_said_last(phase):
    turn = Turn(hands_free=True, phase=phase)
    outcome = turn.voice_barge_in(1.0)
    assert outcome.send == BARGE and outcome.cut_playout and turn.phase is Phase.USER_SPEAKING


def test_voice_barge_in_does_nothing_in_push_to_talk_or_when_idle():
    assert Turn(phase=Phase.ANSWERING).voice_barge_in(1.0) is NOTHING
    assert Turn(hands_free=True, phase=Phase.IDLE).voice_barge_in(1.0) is NOTHING


def test_in_hands_free_the_button_only_interrupts_and_the_vad_still_ends_turns():
    turn = Turn(hands_free=True)
    assert turn.press(0.0) is NOTHING and turn.release(0.5) is NOTHING
    assert turn.phase is Phase.IDLE and turn.mic_open
    turn.on_server_event(p.SpeechStarted(), 1.0)
    assert turn.on_server_event(p.SpeechStopped(), 2.0).expect_answer
    turn.on_server_event(p.AudioStarted(), 2.2)
    outcome = turn.press(3.0)
    assert outcome.send == BARGE and outcome.cut_playout and turn.phase is Phase.IDLE


def test_push_to_talk_ignores_the_servers_vad_events():
    turn = Turn()
    assert turn.on_server_event(p.SpeechStarted(), 0.0) is NOTHING
    assert turn.on_server_event(p.SpeechStopped(), 1.0) is NOTHING
    assert turn.phase is Phase.IDLE


def test_the_server_says_which_mode_it_is_in():
    turn = Turn(hands_free=False)
    turn.on_server_event(p.SessionChanged(hands_free=True), 0.0)
    assert turn.hands_free and turn.mic_open


def test_a_refused_turn_or_an_answer_without_audio_ends_the_wait():
    turn = Turn()
    x11_hold(turn, 0.0, 1.0)
    turn.on_server_event(p.ServerError("buffer too small", "input_audio_buffer_commit_empty"), 1.2)
    assert turn.phase is Phase.IDLE and turn.answer_wanted_at is None
    x11_hold(turn, 2.0, 1.0)
    turn.on_server_event(p.ResponseDone("completed"), 3.5)
    assert turn.phase is Phase.IDLE


def test_a_typed_turn_asks_for_an_answer_and_cuts_one_playing():
    turn = Turn(phase=Phase.ANSWERING)
    outcome = turn.text_turn(4.0)
    assert outcome.send == BARGE + (p.CreateResponse(),) and outcome.expect_answer
    assert turn.phase is Phase.WAITING and turn.answer_wanted_at == 4.0


@pytest.mark.parametrize("phase", list(Phase))
def test_a_new_connection_drops_whatever_turn_was_in_progress(phase):
    turn = Turn(phase=phase, answer_wanted_at=1.0, muted_until=9.0)
    turn.reset()
    assert turn.phase is Phase.IDLE and turn.answer_wanted_at is None and turn.accepts_audio(0.0)


def test_an_answer_given_through_a_tool_is_still_timed_from_the_release():
    turn = Turn()
    x11_hold(turn, 0.0, 1.0)
    call = p.FunctionCall("c1", "get_time", "{}", "r1")
    turn.on_server_event(p.ResponseDone("completed", calls=(call,), id="r1"), 1.3)
    assert turn.phase is Phase.WAITING  # the answer comes after the tool's output
    turn.on_server_event(p.AudioStarted(), 1.5)
    assert turn.answer_audible(1.6).latency_ms == pytest.approx(600)

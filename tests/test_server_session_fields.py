"""The session fields of issue #15 on the local server: noise_reduction, semantic_vad with
eagerness, transcription.language, and the voice fixed once assistant audio was sent.

Tables against the pure validator, then real calls to the real server process.
"""

from __future__ import annotations

import asyncio

import pytest

from _server_fixtures import connect, question, server  # noqa: F401 - fixtures
from rig.server_process import ServerProcess
from server.realtime.session import (
    EAGERNESS_SILENCE_MS,
    VOICE_LOCKED_MESSAGE,
    SessionConfig,
    SessionError,
    TurnDetection,
    apply_session_update,
)

PTT = SessionConfig(turn_detection=None)


def audio_in(**fields) -> dict:
    return {"type": "realtime", "audio": {"input": fields}}


@pytest.mark.parametrize("raw, expected", [
    (audio_in(noise_reduction={"type": "near_field"}), "near_field"),
    (audio_in(noise_reduction={"type": "far_field"}), "far_field"),
    (audio_in(noise_reduction=None), None),
])
def test_noise_reduction_is_accepted_and_reported(raw, expected) -> None:
    session = apply_session_update(SessionConfig(noise_reduction="far_field"), raw)
    assert session.noise_reduction == expected
    reported = session.to_json("sess_1")["audio"]["input"]["noise_reduction"]
    assert reported == ({"type": expected} if expected else None)


@pytest.mark.parametrize("raw, param", [
    (audio_in(noise_reduction={"type": "studio"}), "session.audio.input.noise_reduction.type"),
    (audio_in(noise_reduction={}), "session.audio.input.noise_reduction.type"),
    (audio_in(noise_reduction="near_field"), "session.audio.input.noise_reduction"),
    (audio_in(turn_detection={"type": "semantic_vad", "eagerness": "eager"}),
     "session.audio.input.turn_detection.eagerness"),
    (audio_in(turn_detection={"type": "semantic_vad", "eagerness": 3}),
     "session.audio.input.turn_detection.eagerness"),
    (audio_in(transcription={"model": "whisper-1", "language": 7}), "session.audio.input.transcription.language"),
])
def test_wrong_values_of_the_new_fields_are_refused_by_path(raw, param) -> None:
    with pytest.raises(SessionError) as caught:
        apply_session_update(PTT, raw)
    assert caught.value.param == param and caught.value.code == "invalid_value"


@pytest.mark.parametrize("eagerness", ["low", "medium", "high", "auto"])
def test_semantic_vad_runs_as_the_servers_vad_with_eagerness_setting_the_pause(eagerness) -> None:
    session = apply_session_update(PTT, audio_in(turn_detection={"type": "semantic_vad", "eagerness": eagerness}))
    detection = session.turn_detection
    assert detection is not None and detection.type == "semantic_vad"
    assert detection.silence_duration_ms == EAGERNESS_SILENCE_MS[eagerness]
    # Reported with only the fields OpenAI's SemanticVad has.
    assert session.to_json("s")["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad", "eagerness": eagerness, "create_response": True, "interrupt_response": True}


def test_turn_detection_settings_carry_over_only_within_one_type() -> None:
    semantic = apply_session_update(PTT, audio_in(turn_detection={"type": "semantic_vad", "eagerness": "high"}))
    # A tuning without a type keeps the type (and, for semantic_vad, the eagerness).
    assert apply_session_update(semantic, audio_in(turn_detection={})).turn_detection == semantic.turn_detection
    server = apply_session_update(semantic, audio_in(turn_detection={"type": "server_vad"}))
    assert server.turn_detection == TurnDetection()
    tuned = apply_session_update(server, audio_in(turn_detection={"silence_duration_ms": 700}))
    assert tuned.turn_detection == TurnDetection(silence_duration_ms=700)


def test_transcription_language_is_kept_and_reported() -> None:
    session = apply_session_update(PTT, audio_in(transcription={"model": "whisper-1", "language": "de"}))
    assert (session.transcription_model, session.transcription_language) == ("whisper-1", "de")
    assert session.to_json("s")["audio"]["input"]["transcription"] == {"model": "whisper-1", "language": "de"}
    cleared = apply_session_update(session, audio_in(transcription=None))
    assert cleared.to_json("s")["audio"]["input"]["transcription"] is None


@pytest.mark.parametrize("raw, voice, refused", [
    ({"audio": {"output": {"voice": "cedar"}}}, "cedar", True),
    ({"voice": "cedar"}, "cedar", True),  # the older (beta) place of the voice
    ({"audio": {"output": {"voice": "marin"}}}, "marin", False),  # the same voice is no change
    ({"instructions": "Be brief."}, "marin", False),
])
def test_once_audio_was_sent_the_voice_cannot_change(raw, voice, refused) -> None:
    current = SessionConfig(voice="marin")
    assert apply_session_update(current, raw).voice == voice  # before any audio, everything goes
    if not refused:
        assert apply_session_update(current, raw, voice_locked=True).voice == voice
        return
    with pytest.raises(SessionError) as caught:
        apply_session_update(current, {**raw, "instructions": "changed"}, voice_locked=True)
    assert caught.value.code == "cannot_update_voice" and str(caught.value) == VOICE_LOCKED_MESSAGE


# ---- real calls -----------------------------------------------------------------------

@pytest.mark.timeout(120)
async def test_a_voice_change_after_an_answer_is_refused_and_the_call_goes_on(server: ServerProcess,
                                                                             question) -> None:
    client = await connect(server)
    try:
        mark = client.mark()
        client.send({"type": "session.update", "session": {"type": "realtime", "audio": {
            "output": {"voice": "cedar"}, "input": {"noise_reduction": {"type": "far_field"},
                                                    "transcription": {"model": "whisper-1", "language": "en"}}}}})
        updated = await client.wait_for("session.updated", since=mark)
        assert updated["session"]["audio"]["output"]["voice"] == "cedar"  # before any audio: allowed
        assert updated["session"]["audio"]["input"]["noise_reduction"] == {"type": "far_field"}
        assert updated["session"]["audio"]["input"]["transcription"]["language"] == "en"
        mark = await client.push_to_talk(question)
        assert (await client.wait_for("response.done", since=mark, timeout=30))["response"]["status"] == "completed"
        mark = client.mark()
        client.send({"type": "session.update", "event_id": "voice_again",
                     "session": {"type": "realtime", "instructions": "x", "audio": {"output": {"voice": "marin"}}}})
        error = (await client.wait_for("error", since=mark))["error"]
        assert error == {"type": "invalid_request_error", "code": "cannot_update_voice", "message": VOICE_LOCKED_MESSAGE,
                         "param": "session.audio.output.voice", "event_id": "voice_again"}
        assert not client.of_type("session.updated", mark)  # the whole update was refused
        # The same voice, and everything else, still goes; so does the next turn.
        client.send({"type": "session.update", "session": {"type": "realtime", "instructions": "y",
                                                           "audio": {"output": {"voice": "cedar"}}}})
        again = await client.wait_for("session.updated", since=mark)
        assert again["session"]["instructions"] == "y" and again["session"]["audio"]["output"]["voice"] == "cedar"
        mark = await client.push_to_talk(question)
        assert (await client.wait_for("response.done", since=mark, timeout=30))["response"]["status"] == "completed"
    finally:
        await client.close()


@pytest.mark.timeout(120)
async def test_semantic_vad_takes_hands_free_turns(server: ServerProcess, question) -> None:
    client = await connect(server)
    try:
        mark = client.mark()
        client.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}}})
        updated = await client.wait_for("session.updated", since=mark)
        assert updated["session"]["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
        await asyncio.sleep(0.3)
        mark = client.mark()
        client.speak(question)  # no commit, no response.create: the server's VAD takes the turn
        await client.wait_for("input_audio_buffer.speech_started", since=mark, timeout=10)
        await client.wait_for("input_audio_buffer.speech_stopped", since=mark, timeout=15)
        heard = await client.wait_for("conversation.item.input_audio_transcription.completed", since=mark, timeout=20)
        assert "time" in heard["transcript"].lower()
        done = await client.wait_for("response.done", since=mark, timeout=30)
        assert done["response"]["status"] == "completed"
    finally:
        await client.close()

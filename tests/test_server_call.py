"""Calls to the real server process with a real aiortc client over loopback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import av
import numpy as np
import pytest

from base.pcm import FRAME_SAMPLES, level_dbfs
from rig.realtime_client import RealtimeClient, ephemeral_key
from rig.server_process import ServerProcess, start_server
from server.realtime.audio_out import OutputTrack, Pacing

pytestmark = pytest.mark.timeout(120)


def tone(seconds: float, hz: float = 440.0, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(int(48000 * seconds)) / 48000
    return (np.sin(2 * np.pi * hz * t) * amplitude).astype(np.int16)


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory):
    server = start_server(tmp_path_factory.mktemp("echo"), "--mode", "echo")
    yield server
    assert server.stop() == 0, server.stderr()


async def test_echo_mode_returns_the_callers_audio(echo_server: ServerProcess) -> None:
    client = await RealtimeClient.connect(echo_server.base_url,
                                          await ephemeral_key(echo_server.base_url, echo_server.server_key))
    try:
        created = await client.wait_for("session.created")
        assert created["event_id"] and created["session"]["audio"]["input"]["turn_detection"] is None
        quiet_before = client.audio.since(0)
        assert len(quiet_before) == 0 or level_dbfs(quiet_before) < -80, "silence when idle"
        sent_at = time.monotonic()
        await client.speak(tone(1.0)).finished
        await asyncio.sleep(0.3)
        echoed = client.audio.since(sent_at)
        # Loud audio came back, about as much as was sent (Opus changes the samples, not the length).
        assert level_dbfs(echoed) > -30
        loud_frames = sum(1 for s in client.audio.samples if level_dbfs(s) > -30)
        assert 40 <= loud_frames <= 60, loud_frames
        # The echo carries the same pitch: the spectrum peaks at 440 Hz.
        spectrum = np.abs(np.fft.rfft(echoed.astype(np.float64)))
        peak_hz = np.argmax(spectrum) * 48000 / len(echoed)
        assert abs(peak_hz - 440) < 10, peak_hz
        first = client.audio.first_loud_after(sent_at)
        assert first is not None and first - sent_at < 1.0  # a sanity bound; bench/ measures latency
    finally:
        await client.close()


async def test_the_echo_track_stands_in_for_lost_frames_but_not_for_a_pause() -> None:
    track = OutputTrack(Pacing.PASS_THROUGH)
    one, two = (np.full(FRAME_SAMPLES, v, dtype=np.int16) for v in (1000, 2000))

    async def sent(n: int) -> list[int]:
        return [int((await track.recv()).to_ndarray().max()) for _ in range(n)]

    track.push(one, 0)
    track.push(np.concatenate([two, two]), 2 * FRAME_SAMPLES)  # slot 1 lost; two frames merged
    assert await sent(4) == [1000, 0, 2000, 2000]
    track.push(one, 104 * FRAME_SAMPLES)  # 100 slots on: the sender paused, nothing was lost
    track.push(two, 105 * FRAME_SAMPLES)
    assert await sent(2) == [1000, 2000]
    track.stop()


class LossyMic(OutputTrack):
    """A microphone whose chosen RTP timestamp slots never reach the server: the frame due
    in such a slot goes in the next one, so the server sees what a lost packet leaves,
    a timestamp skipped between two frames 40 ms apart."""

    def __init__(self) -> None:
        super().__init__(Pacing.CLOCK)
        self.lose: set[int] = set()  # slots (pts // FRAME_SAMPLES) that go missing
        self.slots_lost = 0

    def slot(self) -> int:
        return self._pts // FRAME_SAMPLES

    async def recv(self) -> av.AudioFrame | av.Packet:
        while self.slot() in self.lose:
            self._pts += FRAME_SAMPLES
            self.slots_lost += 1
        return await super().recv()


async def test_a_frame_lost_on_the_way_in_is_echoed_as_silence_in_its_place(echo_server: ServerProcess) -> None:
    # The echo keeps every slot of the caller's timeline, as a provider's output does:
    # without the stand-ins it would come back four frames short, a hole at each loss.
    mic = LossyMic()
    client = await RealtimeClient.connect(echo_server.base_url,
                                          await ephemeral_key(echo_server.base_url, echo_server.server_key),
                                          mic=mic)
    try:
        await client.wait_for("session.created")
        sent_from = len(client.audio.samples)
        start = mic.slot()  # the tone starts in this slot or the next
        mic.lose = {start + k for k in (15, 35, 36, 60)}
        await client.speak(tone(2.0)).finished  # 100 frames, in 104 slots
        await asyncio.sleep(0.3)
        received = client.audio.samples[sent_from:]
        assert mic.slots_lost == 4
        assert all(len(s) == FRAME_SAMPLES for s in received)
        levels = [round(max(-99.0, level_dbfs(s))) for s in received]
        loud = [i for i, db in enumerate(levels) if db > -30]
        assert loud, "no echo came back"
        # 104 slots (one of slack where Opus smears the tone's edge), with a dip at each
        # stand-in: the tone is at -21 dBFS, a lone silent frame between tone comes out
        # at ~-26 (Opus smears the tone into it), two at ~-26 and -80.
        assert abs(loud[-1] - loud[0] + 1 - 104) <= 1, levels
        assert sum(1 for db in levels[loud[0]:loud[-1] + 1] if db <= -25) >= 3, levels
    finally:
        await client.close()


async def test_the_server_ends_a_call_the_client_hangs_up(echo_server: ServerProcess) -> None:
    client = await RealtimeClient.connect(echo_server.base_url,
                                          await ephemeral_key(echo_server.base_url, echo_server.server_key))
    assert client.location and client.location.startswith("/v1/realtime/calls/rtc_")
    call_id = client.location.rsplit("/", 1)[1]
    await client.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and f"call {call_id} ended" not in echo_server.stderr():
        await asyncio.sleep(0.1)
    line = next(li for li in echo_server.stderr().splitlines() if f"call {call_id} ended" in li)
    assert "reason: connection closed" in line
    assert echo_server.server_key not in echo_server.stderr()


# ---- assistant mode ------------------------------------------------------------------

@pytest.fixture(scope="module")
def assistant_server(tmp_path_factory: pytest.TempPathFactory):
    server = start_server(tmp_path_factory.mktemp("assistant"))  # assistant is the default mode
    yield server
    assert server.stop() == 0, server.stderr()


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory):
    """Spoken questions (espeak-ng, 48 kHz), made once per module."""
    from rig.speech_samples import make_speech_wav, missing_tools, read_wav_int16

    if missing_tools():
        pytest.fail(f"missing {missing_tools()}: run ./bootstrap.sh test")
    folder = tmp_path_factory.mktemp("speech")

    def say(text: str) -> np.ndarray:
        samples, rate = read_wav_int16(make_speech_wav(text, folder / f"{text.replace(' ', '_')}.wav"))
        assert rate == 48000
        return samples
    return say


async def connect(server: ServerProcess, session: dict | None = None) -> RealtimeClient:
    client = await RealtimeClient.connect(server.base_url,
                                          await ephemeral_key(server.base_url, server.server_key, session))
    await client.wait_for("session.created")
    return client


async def answered_turn(client: RealtimeClient, pcm: np.ndarray) -> tuple[str, str, int]:
    """One push-to-talk turn; returns (what was heard, the answer, the turn's mark)."""
    mark = await client.push_to_talk(pcm)
    heard = (await client.wait_for("conversation.item.input_audio_transcription.completed", since=mark))["transcript"]
    done = await client.wait_for("response.done", since=mark, timeout=30)
    assert done["response"]["status"] == "completed", done
    answer = (await client.wait_for("response.output_audio_transcript.done", since=mark))["transcript"]
    return heard, answer, mark


async def test_push_to_talk_turn_is_heard_and_answered_out_loud(assistant_server: ServerProcess, speech) -> None:
    client = await connect(assistant_server)
    try:
        question = speech("what time is it")
        mark = await client.push_to_talk(question)
        commit_at = time.monotonic()
        heard = await client.wait_for("conversation.item.input_audio_transcription.completed", since=mark)
        assert "time" in heard["transcript"].lower()
        done = await client.wait_for("response.done", since=mark, timeout=30)
        assert done["response"]["status"] == "completed"
        order = [e["type"] for e in client.events[mark:]]
        # response.created may come before the transcript (recognition runs meanwhile); all else is ordered.
        expected = ["input_audio_buffer.cleared", "input_audio_buffer.committed", "response.created",
                    "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
                    "output_audio_buffer.started", "output_audio_buffer.stopped", "response.done"]
        assert [t for t in order if t in expected] == expected, order
        transcribed = order.index("conversation.item.input_audio_transcription.completed")
        assert order.index("input_audio_buffer.committed") < transcribed < order.index(
            "response.output_audio_transcript.delta")
        assert all(e.get("event_id") for e in client.events)
        answer = client.of_type("response.output_audio_transcript.done", mark)[0]["transcript"]
        assert answer.startswith("It is") and ("AM" in answer or "PM" in answer)
        # The answer's audio arrived between started and stopped, loud, and as long as a short sentence.
        started = client.of_type("output_audio_buffer.started", mark)[0]["_received_at"]
        stopped = client.of_type("output_audio_buffer.stopped", mark)[0]["_received_at"]
        answer_audio = client.audio.since(started)
        assert level_dbfs(answer_audio) > -40
        assert 0.5 < stopped - started < 6
        first = client.audio.first_loud_after(commit_at)
        assert first is not None and first - commit_at < 3.0  # sanity only; bench/ measures the target
    finally:
        await client.close()


HOSTILE = [
    '{"type": "no.such.event"}',
    "this is not json",
    '{"type": 42}',
    '["a", "list"]',
    '{"type": "session.update", "session": 5}',
    '{"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"threshold": "high"}}}}}',
    '{"type": "conversation.item.create", "item": {"role": "user", "content": "not a list"}}',
    '{"type": "response.create", "response": "now"}',
    '{"type": "response.cancel"}',  # nothing to cancel
    '{"type": "input_audio_buffer.commit"}',  # nothing to commit
    '{"type": "input_audio_buffer.append", "audio": "AAAA"}',
    '{"type": "session.update", "pad": "' + "x" * 70_000 + '"}',
    b"\x00\x01binary",
]


async def test_hostile_messages_get_errors_and_the_call_goes_on(assistant_server: ServerProcess, speech) -> None:
    client = await connect(assistant_server)
    try:
        mark = client.mark()
        for message in HOSTILE:
            client.send_raw(message)
        deadline = time.monotonic() + 10
        while len(client.of_type("error", mark)) < len(HOSTILE) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        errors = client.of_type("error", mark)
        assert len(errors) == len(HOSTILE), [e["error"]["message"] for e in errors]
        assert all(e["error"]["message"] and e["error"]["type"] == "invalid_request_error" for e in errors)
        assert len(client.events[mark:]) == len(HOSTILE), "hostile messages must change nothing"
        heard, answer, _ = await answered_turn(client, speech("what is your name"))
        assert "name" in heard and "Sandra" in answer
    finally:
        await client.close()


async def test_barge_in_cuts_the_answer_within_a_frame(assistant_server: ServerProcess, speech) -> None:
    client = await connect(assistant_server)
    try:
        mark = await client.push_to_talk(speech("what can you do"))  # a long answer
        await client.wait_for("output_audio_buffer.started", since=mark, timeout=20)
        await asyncio.sleep(0.5)
        cut = client.mark()
        client.send({"type": "response.cancel"})
        client.send({"type": "output_audio_buffer.clear"})
        cut_at = time.monotonic()
        await client.wait_for("output_audio_buffer.cleared", since=cut)
        done = await client.wait_for("response.done", since=cut)
        assert done["response"]["status"] == "cancelled"
        assert not client.of_type("output_audio_buffer.stopped", mark)
        await asyncio.sleep(0.6)
        # Allow for frames already in flight on loopback, then nothing but silence.
        after = client.audio.since(cut_at + 0.15)
        assert len(after) > 48000 * 0.3 and level_dbfs(after) < -60, level_dbfs(after)
        # The call goes on: the next turn is answered.
        heard, answer, _ = await answered_turn(client, speech("thank you"))
        assert "thank" in heard and answer
    finally:
        await client.close()


async def test_reseeded_conversation_is_remembered(assistant_server: ServerProcess, speech) -> None:
    client = await connect(assistant_server)
    try:
        mark = client.mark()
        for role, text in (("user", "my favourite colour is blue"), ("assistant", "Noted.")):
            part = "input_text" if role == "user" else "output_text"
            client.send({"type": "conversation.item.create",
                         "item": {"type": "message", "role": role, "content": [{"type": part, "text": text}]}})
        created = await client.wait_for("conversation.item.created", since=mark)
        assert created["item"]["content"][0]["text"] == "my favourite colour is blue"
        heard, answer, _ = await answered_turn(client, speech("what did I say before"))
        assert "say" in heard and "blue" in answer
    finally:
        await client.close()


async def test_hands_free_turn_answers_by_itself(assistant_server: ServerProcess, speech) -> None:
    client = await connect(assistant_server, {"type": "realtime"})  # server_vad, OpenAI's default
    try:
        assert client.of_type("session.created")[0]["session"]["audio"]["input"]["turn_detection"]
        mark = client.mark()
        client.speak(np.concatenate([speech("hello"), np.zeros(48000, np.int16)]))
        await client.wait_for("input_audio_buffer.speech_started", since=mark)
        await client.wait_for("input_audio_buffer.speech_stopped", since=mark)
        heard = await client.wait_for("conversation.item.input_audio_transcription.completed", since=mark)
        assert "hello" in heard["transcript"]
        done = await client.wait_for("response.done", since=mark, timeout=30)
        assert done["response"]["status"] == "completed"
        assert "help" in done["response"]["output"][0]["content"][0]["transcript"]
    finally:
        await client.close()


async def test_what_it_cannot_understand_gets_a_spoken_sorry(assistant_server: ServerProcess, speech) -> None:
    client = await connect(assistant_server)
    try:
        heard, answer, mark = await answered_turn(client, speech("the weather in paris tomorrow"))
        assert heard == "" and "Sorry" in answer
        started = client.of_type("output_audio_buffer.started", mark)[0]["_received_at"]
        assert level_dbfs(client.audio.since(started)) > -40  # spoken, never silence
    finally:
        await client.close()

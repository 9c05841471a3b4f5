"""The real server recognises a turn while it is spoken, and still hears one it did not listen to."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest

from rig.server_process import ServerProcess
# The assistant server and the spoken questions those call tests use (module-scoped fixtures).
from test_server_call import assistant_server, connect, speech  # noqa: F401

pytestmark = pytest.mark.timeout(180)

_HEARD = re.compile(r"heard '([^']*)' \(accepted \w+, score [-\d.inf]+, streamed (True|False)\): "
                    r"recognised (\d+) ms after the commit, decoding (\d+) ms of it")


def _heard_lines(server: ServerProcess) -> list[tuple[str, bool]]:
    """(text, streamed) of each "heard" line in the server's debug log, in order."""
    text = "".join(p.read_text(errors="replace") for p in sorted(server.home.rglob("server.log*")))
    return [(heard, streamed == "True") for heard, streamed, _, _ in _HEARD.findall(text)]


async def _wait_heard_lines(server: ServerProcess, count: int) -> list[tuple[str, bool]]:
    for _ in range(100):
        if len(lines := _heard_lines(server)) >= count:
            return lines
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {count} 'heard' lines in the server's log: {_heard_lines(server)}")


async def test_turns_are_recognised_as_they_are_spoken_or_at_commit(assistant_server: ServerProcess,
                                                                   speech) -> None:
    server, say = assistant_server, speech
    client = await connect(server)
    try:
        # No clear before this turn: the server did not know it began, so it decodes it all at commit.
        mark = client.mark()
        await client.speak(say("what is your name")).finished
        await asyncio.sleep(0.1)
        client.send({"type": "input_audio_buffer.commit"})
        heard = await client.wait_for("conversation.item.input_audio_transcription.completed", since=mark)
        assert heard["transcript"] == "what is your name"
        # Push-to-talk: clear, speak, commit — recognised while spoken.
        mark = await client.push_to_talk(say("what is three plus four"))
        heard = await client.wait_for("conversation.item.input_audio_transcription.completed", since=mark)
        assert heard["transcript"] == "what is three plus four"
        await client.wait_for("response.done", since=mark, timeout=30)
        # A cleared turn is abandoned, and the next one heard on its own.
        client.send({"type": "input_audio_buffer.clear"})
        await client.speak(say("goodbye")).finished
        mark = await client.push_to_talk(say("thank you"))
        heard = await client.wait_for("conversation.item.input_audio_transcription.completed", since=mark)
        assert heard["transcript"] == "thank you"
    finally:
        await client.close()
    assert await _wait_heard_lines(server, 3) == [
        ("what is your name", False), ("what is three plus four", True), ("thank you", True)]


async def test_hands_free_turns_are_recognised_from_the_speech_start(assistant_server: ServerProcess,
                                                                     speech) -> None:
    server, say = assistant_server, speech
    client = await connect(server, {"type": "realtime"})  # server_vad, OpenAI's default
    try:
        before = len(_heard_lines(server))
        mark = client.mark()
        client.speak(np.concatenate([np.zeros(24000, np.int16), say("what time is it"), np.zeros(48000, np.int16)]))
        heard = await client.wait_for("conversation.item.input_audio_transcription.completed", since=mark,
                                      timeout=20)
        assert heard["transcript"] == "what time is it"
    finally:
        await client.close()
    assert (await _wait_heard_lines(server, before + 1))[before:] == [("what time is it", True)]

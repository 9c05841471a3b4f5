"""Self-test check: a real loopback call to an in-process local server answers a spoken question.

The question is spoken by the server's own synthesizer, so the check needs no file and
no tool beyond what the bundle carries: synthesis → Opus → recognition → answer →
synthesis → Opus back, all over real WebRTC on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import secrets
import time

from core.audio import level_dbfs
from server.realtime.app import ServerOptions
from server.realtime.call import Mode
from server.realtime.client import RealtimeClient, ephemeral_key
from server.realtime.runner import start_server

QUESTION = "What time is it?"
TIMEOUT_S = 30


def selftest_check() -> str:
    return asyncio.run(asyncio.wait_for(_call_once(), TIMEOUT_S))


async def _call_once() -> str:
    running = await start_server("127.0.0.1", 0, ServerOptions(server_key=secrets.token_urlsafe(24),
                                                                 mode=Mode.ASSISTANT, max_calls=1))
    try:
        assert running.server.speech is not None
        question = await running.server.speech.synthesize(QUESTION)
        key = await ephemeral_key(running.base_url, running.server.options.server_key)
        client = await RealtimeClient.connect(running.base_url, key)
        try:
            await client.wait_for("session.created")
            mark = await client.push_to_talk(question)
            committed_at = time.monotonic()
            heard = (await client.wait_for("conversation.item.input_audio_transcription.completed",
                                           since=mark))["transcript"]
            done = await client.wait_for("response.done", since=mark, timeout=20)
            if done["response"]["status"] != "completed":
                raise RuntimeError(f"the answer ended {done['response']['status']}")
            answer = done["response"]["output"][0]["content"][0]["transcript"]
            first_audio = client.audio.first_loud_after(committed_at)
            if first_audio is None or level_dbfs(client.audio.since(committed_at)) < -50:
                raise RuntimeError("the answer's audio never arrived")
        finally:
            await client.close()
    finally:
        await running.stop()
    if "time" not in heard.lower():
        raise RuntimeError(f"asked {QUESTION!r} but the server heard {heard!r}")
    return (f"{running.base_url}: heard {heard!r}, answered {answer!r}, "
            f"first answer audio {1000 * (first_audio - committed_at):.0f} ms after the turn ended")

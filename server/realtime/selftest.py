"""Self-test check of the local server: it starts, hands out a key, and understands itself.

The question is spoken by the server's own synthesizer and recognised by its own
recognizer, so the check needs no file and no tool beyond what the bundle carries.
A whole WebRTC call through the bundled server is the client's check (main.py),
made by the app's own engine, so the server ships no second client.
"""

from __future__ import annotations

import asyncio
import secrets

import aiohttp

from server.realtime.app import ServerOptions
from server.realtime.call import Mode
from server.realtime.runner import start_server

QUESTION = "What time is it?"
TIMEOUT_S = 30


def selftest_check() -> str:
    return asyncio.run(asyncio.wait_for(_check(), TIMEOUT_S))


async def _check() -> str:
    key = secrets.token_urlsafe(24)
    running = await start_server("127.0.0.1", 0, ServerOptions(server_key=key, mode=Mode.ASSISTANT, max_calls=1))
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.post(f"{running.base_url}/realtime/client_secrets", json={"session": {"type": "realtime"}},
                                 headers={"Authorization": f"Bearer {key}"}) as response:
                secret = await response.json()
        if not str(secret.get("value", "")).startswith("ek_"):
            raise RuntimeError(f"client_secrets gave no ephemeral key: {secret}")
        assert running.server.speech is not None
        question = await running.server.speech.synthesize(QUESTION)
        heard = await running.server.speech.recognize(question)
        answer = running.server.speech.answer(heard.text, [])
    finally:
        await running.stop()
    if not heard.accepted or "time" not in (heard.text or ""):
        raise RuntimeError(f"said {QUESTION!r} but recognised {heard.text!r}")
    return f"{running.base_url}: key issued, heard {heard.text!r} in {heard.elapsed_ms:.0f} ms, would answer {answer.text!r}"

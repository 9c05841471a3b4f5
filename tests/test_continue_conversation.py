"""A conversation you can come back to: yesterday's call, the app restarted, "continue".

Two separate calls to two separate runs of the real local server (a process each, as
after a restart): the first leaves its transcript on disk; the second is seeded from that
file the way File → Conversations → Continue does it, and the server, which knows only
what the new session was re-seeded with, answers "what did I say before" from it.
"""

from __future__ import annotations

import pytest

from base import paths
from core.call.engine import CallEngine
from core.call.events import TranscriptDelta
from core.call.state import Phase
from core.transcripts import list_conversations, read_transcript, seed_messages
from rig.engine_helpers import Recorder, custom_settings, tone_audio
from rig.server_process import TEST_SERVER_KEY, start_server

pytestmark = pytest.mark.timeout(120)


async def _typed_call(tmp_path, text: str, history=()) -> list[str]:
    """One call with one typed turn; the assistant's answers."""
    server = start_server(tmp_path, "--mode", "assistant")
    engine = CallEngine(custom_settings(server.base_url), audio=tone_audio(tmp_path), api_key=TEST_SERVER_KEY,
                        history=history)
    recorder = Recorder(engine)
    try:
        await engine.start()
        await recorder.wait_phase(Phase.CONNECTED, 30)
        engine.send_text(text)
        await recorder.wait_for(lambda e: isinstance(e, TranscriptDelta) and e.final and e.role == "assistant", 30)
    finally:
        await engine.close()
        server.stop()
    return [e.text for e in recorder.events if isinstance(e, TranscriptDelta) and e.final and e.role == "assistant"]


async def test_a_past_conversation_continues_where_it_left_off(tmp_path, private_home):
    first = await _typed_call(tmp_path / "yesterday", "what is your name")
    assert first and "Sandra" in first[0]

    (past,) = list_conversations(paths.transcripts_dir())  # what the Conversations list shows
    assert past.turns == 2
    seeded = seed_messages(read_transcript(past.path))
    answers = await _typed_call(tmp_path / "today", "what did I say before", history=seeded)
    assert any("what is your name" in answer.lower() for answer in answers), answers

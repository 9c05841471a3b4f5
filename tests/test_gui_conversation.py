"""The conversation view stays bounded on a long call; export holds every message."""

from __future__ import annotations

import json
from types import SimpleNamespace

from core.call.events import TranscriptDelta
from core.history import BoundedHistory
from core.transcripts import TranscriptLog
from gui.conversation_export import conversation, export
from gui.conversation_view import MAX_TURNS, ConversationView


def test_only_the_newest_turns_stay_on_screen(qtbot):
    view = ConversationView()
    qtbot.addWidget(view)
    for i in range(MAX_TURNS + 25):
        view.apply(TranscriptDelta("user" if i % 2 == 0 else "assistant", f"turn {i}", True, f"t{i}"))
    turns = view.turns()
    assert len(turns) == MAX_TURNS
    assert turns[0][1] == "turn 25" and turns[-1][1] == f"turn {MAX_TURNS + 24}"


def test_export_reads_the_whole_transcript_not_just_the_bounded_history(tmp_path):
    history = BoundedHistory()
    transcript = TranscriptLog(tmp_path / "transcripts", "session-1")
    for i in range(70):
        role = "user" if i % 2 == 0 else "assistant"
        history.add(role, f"message {i}")
        transcript.append(role, f"message {i}")
    engine = SimpleNamespace(history=history, transcript=transcript)
    messages = conversation(engine)
    assert len(history.messages()) == 50 and len(messages) == 70
    export(messages, tmp_path / "out.json")
    exported = json.loads((tmp_path / "out.json").read_text())
    assert [m["content"] for m in exported] == [f"message {i}" for i in range(70)]
    export(messages, tmp_path / "out.md")
    assert (tmp_path / "out.md").read_text().count("**You**") == 35


def test_without_a_transcript_file_export_falls_back_to_the_history():
    history = BoundedHistory()
    history.add("user", "hello")
    assert [m["content"] for m in conversation(SimpleNamespace(history=history, transcript=None))] == ["hello"]

"""The call's conversation: the bounded history (re-seeding, export) and the transcript on disk."""

from __future__ import annotations

import logging
from collections.abc import Callable

from base import paths
from core.history import BoundedHistory
from core.transcripts import TranscriptLog, prune

log = logging.getLogger(__name__)


class Conversation:
    def __init__(self, session_id: str, *, save_transcript: bool, retention_days: int,
                 on_problem: Callable[[str], None], history: BoundedHistory | None = None) -> None:
        self.history = history or BoundedHistory()
        self.transcript: TranscriptLog | None = None
        self._session_id = session_id
        self._save = save_transcript
        self._retention_days = retention_days
        self._on_problem = on_problem

    def open(self) -> None:
        """Start the transcript file (once a call; a redial appends to the same one)."""
        if self.transcript is not None or not self._save:
            return
        try:
            directory = paths.transcripts_dir()
            prune(directory, self._retention_days)
        except OSError as exc:
            self._on_problem(f"Transcripts cannot be saved ({exc}); the call goes on without them.")
            return
        self.transcript = TranscriptLog(directory, self._session_id)

    def remember(self, role: str, text: str) -> None:
        self.history.add(role, text)
        if self.transcript is not None:
            self.transcript.append(role, text)

    def note_tool(self, name: str, arguments: str, output: str) -> None:
        """A tool call and its result: in the transcript, not in the history a new session is seeded with."""
        if self.transcript is not None:
            self.transcript.append("tool", f"{name}({arguments}) -> {output}")

    def close(self) -> None:
        if self.transcript is not None:
            self.transcript.close()

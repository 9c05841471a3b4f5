"""The transcript log: every conversation as JSONL under the user data dir.

One file per call, one line per user or assistant message, flushed as it is written,
so a crash or `kill -9` loses at most the turn in progress. Old files are pruned by
the retention setting. Export reads these files, tolerating a torn last line; the conversation list
(`list_conversations`) summarises them so a past conversation can be reopened.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"


class TranscriptLog:
    def __init__(self, directory: Path, session_id: str, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.session_id = session_id
        self._clock = clock
        self._file: IO[str] | None = None
        self.path: Path | None = None
        self.failed = False

    def append(self, role: str, content: str, timestamp: float | None = None) -> None:
        """Write one message and flush it. A disk problem is logged once, never raised into the call."""
        if self.failed:
            return
        line = {"session": self.session_id, "role": role, "content": content,
                "timestamp": self._clock() if timestamp is None else timestamp}
        try:
            if self._file is None:
                self._open()
            assert self._file is not None
            self._file.write(json.dumps(line, ensure_ascii=False) + "\n")
            self._file.flush()
        except OSError as exc:
            self.failed = True
            log.error("cannot write the transcript in %s (%s); the call goes on without it", self.directory, exc)

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d_%H%M%S", time.localtime(self._clock()))
        self.path = self.directory / f"{stamp}_{self.session_id[:8]}{SUFFIX}"
        # Line-buffered text; owner-only, since a conversation is private.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        # A lone surrogate in a server transcript must not stop the log: write it escaped.
        self._file = os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace", buffering=1)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_transcript(path: Path) -> list[dict[str, Any]]:
    """The messages of one transcript file; a torn or corrupt line is skipped, not fatal."""
    messages = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                message = json.loads(raw)
            except ValueError:
                log.warning("%s line %d is not a whole message; skipped", path.name, number)
                continue
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                messages.append(message)
    return messages


def list_transcripts(directory: Path) -> list[Path]:
    """Transcript files, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime)


def prune(directory: Path, retention_days: int, now: float | None = None) -> list[Path]:
    """Delete transcripts last written more than retention_days ago (0 keeps everything)."""
    if retention_days <= 0:
        return []
    cutoff = (time.time() if now is None else now) - retention_days * 86400
    removed = []
    for path in list_transcripts(directory):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
        except OSError as exc:
            log.warning("cannot prune %s: %s", path.name, exc)
    return removed


@dataclass(frozen=True)
class TranscriptSummary:
    """One past conversation as the conversation list shows it."""

    path: Path
    started: float  # seconds since the epoch: the first message's time (the file's, if none)
    first_user_line: str  # "" when the user never spoke
    turns: int  # messages, user and assistant


def summarize(path: Path) -> TranscriptSummary:
    """Read one transcript file for the list. OSError if it cannot be read."""
    messages = read_transcript(path)
    stamps = [m["timestamp"] for m in messages if _is_time(m.get("timestamp"))]
    started = stamps[0] if stamps else path.stat().st_mtime
    first = next((m["content"] for m in messages if m.get("role") == "user" and m["content"].strip()), "")
    return TranscriptSummary(path, float(started), first.strip().splitlines()[0] if first else "", len(messages))


def list_conversations(directory: Path) -> list[TranscriptSummary]:
    """Every readable transcript, newest first; an unreadable file is logged and left out."""
    summaries = []
    for path in list_transcripts(directory):
        try:
            summaries.append(summarize(path))
        except OSError as exc:
            log.warning("cannot read the transcript %s: %s", path.name, exc)
    return sorted(summaries, key=lambda s: s.started, reverse=True)


def seed_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages a new call can be re-seeded from (user and assistant, with a usable time)."""
    return [{"role": m["role"], "content": m["content"], "timestamp": m["timestamp"]}
            for m in messages if m.get("role") in ("user", "assistant") and _is_time(m.get("timestamp"))]


def delete_transcript(path: Path) -> None:
    """Delete one conversation's file (already gone is fine). OSError if it cannot be removed."""
    path.unlink(missing_ok=True)
    log.info("deleted the transcript %s", path.name)


def _is_time(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

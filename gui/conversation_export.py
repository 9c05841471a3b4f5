"""Conversation export as Markdown or JSON.

The window exports the call's transcript file (core/transcripts.py), which holds every
message; the engine's bounded history (the newest 50) is the fallback when no file was
written.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from core.transcripts import read_transcript

_TITLES = {"user": "You", "assistant": "Sandra", "system": "System"}


def conversation(engine: Any) -> list[dict[str, Any]]:
    """Every message of the engine's call: from its transcript file, else its history."""
    transcript = getattr(engine, "transcript", None)
    if transcript is not None and transcript.path is not None and transcript.path.exists():
        return [{k: m[k] for k in ("role", "content", "timestamp")} for m in read_transcript(transcript.path)]
    history = getattr(engine, "history", None)
    return history.messages() if history is not None else []


def to_markdown(messages: list[dict[str, Any]]) -> str:
    lines = ["# Conversation with Sandra", ""]
    for message in messages:
        when = datetime.fromtimestamp(float(message["timestamp"])).strftime("%Y-%m-%d %H:%M:%S")
        title = _TITLES.get(message["role"], str(message["role"]))
        lines += [f"**{title}** · {when}", "", str(message["content"]), ""]
    return "\n".join(lines)


def export(messages: list[dict[str, Any]], path: Path) -> str:
    """Write the messages to `path`: JSON for a .json name, Markdown otherwise. Returns the format."""
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(messages, ensure_ascii=False, indent=1), encoding="utf-8")
        return "json"
    path.write_text(to_markdown(messages), encoding="utf-8")
    return "markdown"

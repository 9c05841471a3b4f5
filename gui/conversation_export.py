"""Conversation export as Markdown or JSON, from the engine's history."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

_TITLES = {"user": "You", "assistant": "Sandra", "system": "System"}


class History(Protocol):
    def messages(self) -> list[dict[str, Any]]: ...
    def to_json(self) -> str: ...


def to_markdown(messages: list[dict[str, Any]]) -> str:
    lines = ["# Conversation with Sandra", ""]
    for message in messages:
        when = datetime.fromtimestamp(float(message["timestamp"])).strftime("%Y-%m-%d %H:%M:%S")
        title = _TITLES.get(message["role"], str(message["role"]))
        lines += [f"**{title}** · {when}", "", str(message["content"]), ""]
    return "\n".join(lines)


def export(history: History, path: Path) -> str:
    """Write the history to `path`: JSON for a .json name, Markdown otherwise. Returns the format."""
    if path.suffix.lower() == ".json":
        path.write_text(history.to_json(), encoding="utf-8")
        return "json"
    path.write_text(to_markdown(history.messages()), encoding="utf-8")
    return "markdown"

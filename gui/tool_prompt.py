"""Asking the user before a tool that changes something runs (issue #17).

`ToolPrompter.approve` is the call engine's Approver: it shows a small non-modal
prompt (the call and the window stay usable) and waits for the answer: Allow once,
Allow for this session (no more prompts for that tool until Sandra quits), Always
allow (remembered in Settings through the session's writer), or Refuse. Closing the
prompt refuses; a prompt whose wait is cancelled (the registry's approval timeout,
the call ending) closes itself.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from core.tools.registry import Tool

log = logging.getLogger(__name__)

MAX_ARGUMENTS_CHARS = 400  # a prompt, not a document: long arguments are cut


class Choice(enum.Enum):
    ONCE = "once"
    SESSION = "session"
    ALWAYS = "always"
    REFUSE = "refuse"


_BUTTONS = ((Choice.ONCE, "Allow once"), (Choice.SESSION, "Allow for this session"),
            (Choice.ALWAYS, "Always allow"), (Choice.REFUSE, "Refuse"))


def describe_arguments(arguments: Mapping[str, Any]) -> str:
    text = json.dumps(dict(arguments), ensure_ascii=False, indent=1, default=str)
    return text if len(text) <= MAX_ARGUMENTS_CHARS else text[:MAX_ARGUMENTS_CHARS] + "…"


class ToolPrompt(QDialog):
    """One question: may this tool run with these arguments?"""

    answered = Signal(object)  # Choice

    def __init__(self, tool: Tool, arguments: Mapping[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("toolPrompt")
        self.setWindowTitle("Allow a tool?")
        self.setModal(False)
        self.tool_name = tool.name
        question = QLabel(f"Sandra wants to run “{tool.name}”: {tool.description}")
        question.setWordWrap(True)
        details = QLabel(describe_arguments(arguments))
        details.setObjectName("toolPromptArguments")
        details.setTextFormat(Qt.TextFormat.PlainText)
        details.setWordWrap(True)
        details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QHBoxLayout()
        self.buttons: dict[Choice, QPushButton] = {}
        for choice, text in _BUTTONS:
            button = QPushButton(text)
            button.setAutoDefault(False)
            button.clicked.connect(lambda _checked=False, c=choice: self._answer(c))
            buttons.addWidget(button)
            self.buttons[choice] = button
        layout = QVBoxLayout(self)
        layout.addWidget(question)
        layout.addWidget(details)
        layout.addLayout(buttons)
        self.rejected.connect(lambda: self._answer(Choice.REFUSE))  # Escape or the close button

    def _answer(self, choice: Choice) -> None:
        self.answered.emit(choice)


class ToolPrompter:
    """The window's Approver; `remember(tool, policy)` saves an "always" in Settings."""

    def __init__(self, parent: QWidget, remember: Callable[[str, str], None]) -> None:
        self._parent = parent
        self._remember = remember
        self._session_allowed: set[str] = set()
        self.open: list[ToolPrompt] = []  # prompts on screen now (tests answer them)

    async def approve(self, tool: Tool, arguments: Mapping[str, Any]) -> bool:
        if tool.name in self._session_allowed:
            return True
        answer: asyncio.Future[Choice] = asyncio.get_running_loop().create_future()
        prompt = ToolPrompt(tool, arguments, self._parent)
        prompt.answered.connect(lambda choice: answer.done() or answer.set_result(choice))
        self.open.append(prompt)
        prompt.show()
        try:
            choice = await answer
        finally:  # answered, or the wait was cancelled: the prompt goes either way
            self.open.remove(prompt)
            prompt.answered.disconnect()
            prompt.close()
            # Unparented, it goes with its last reference; a deleteLater could wait for an
            # event-loop pass that comes only after the loop it was posted from has gone.
            prompt.setParent(None)
        log.info("tool %s: the user chose %s", tool.name, choice.value)
        if choice is Choice.SESSION:
            self._session_allowed.add(tool.name)
        elif choice is Choice.ALWAYS:
            self._remember(tool.name, "always")
        return choice is not Choice.REFUSE

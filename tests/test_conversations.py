"""Conversations you can come back to: transcripts listed, opened, continued, deleted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

from base import paths
from core.call.events import EngineEvent
from core.call.state import CallState, Phase
from core.config import Secrets, Settings
from core.history import BoundedHistory
from core.transcripts import TranscriptLog, list_conversations, seed_messages
from gui.app import application
from gui.call_session import CallSession
from gui.conversations import ConversationsDialog
from gui.engine_bridge import EngineBridge
from gui.main_window import MainWindow

DAY = 86400.0
MONDAY = 1_780_000_000.0  # a fixed past moment, so dates and order are known


def write_call(directory: Path, session: str, started: float, lines: list[tuple[str, str]]) -> Path:
    clock = iter(started + n for n in range(len(lines) + 1))
    log = TranscriptLog(directory, session, clock=lambda: next(clock))
    for role, text in lines:
        log.append(role, text)
    log.close()
    assert log.path is not None
    return log.path


YESTERDAY = [("user", "my name is Ada and I like tea"), ("assistant", "Nice to meet you, Ada."),
             ("user", "remember the number 42"), ("assistant", "I will remember 42.")]
TODAY = [("user", "what time is it"), ("assistant", "It is 2:08 PM.")]


@pytest.fixture
def transcripts(private_home) -> Path:
    directory = paths.transcripts_dir()
    write_call(directory, "a" * 32, MONDAY, YESTERDAY)
    write_call(directory, "b" * 32, MONDAY + DAY, TODAY)
    return directory


def test_summaries_are_newest_first_with_first_line_and_turns(transcripts: Path) -> None:
    summaries = list_conversations(transcripts)
    assert [(s.first_user_line, s.turns, s.started) for s in summaries] == [
        ("what time is it", 2, MONDAY + DAY), ("my name is Ada and I like tea", 4, MONDAY)]


def test_a_torn_file_is_listed_from_what_survives(transcripts: Path) -> None:
    torn = write_call(transcripts, "c" * 32, MONDAY - DAY, [("assistant", "Hello."), ("user", "hi there")])
    with open(torn, "a", encoding="utf-8") as handle:
        handle.write('{"role": "user", "cont')
    oldest = list_conversations(transcripts)[-1]
    assert (oldest.path, oldest.first_user_line, oldest.turns) == (torn, "hi there", 2)


def test_seed_messages_keep_only_what_a_history_can_hold() -> None:
    messages = [{"role": "user", "content": "a", "timestamp": 1.0, "session": "x"},
                {"role": "tool", "content": "b", "timestamp": 2.0},
                {"role": "assistant", "content": "c", "timestamp": "noon"},
                {"role": "assistant", "content": "d", "timestamp": 3}]
    seeded = seed_messages(messages)
    assert seeded == [{"role": "user", "content": "a", "timestamp": 1.0},
                      {"role": "assistant", "content": "d", "timestamp": 3}]
    assert BoundedHistory.load(seeded).messages() == seeded


def test_load_keeps_the_newest_within_the_budget() -> None:
    messages = [{"role": "user", "content": f"m{n}", "timestamp": float(n)} for n in range(80)]
    history = BoundedHistory.load(messages, max_messages=50)
    assert [m["content"] for m in history.messages()] == [f"m{n}" for n in range(30, 80)]
    with pytest.raises(ValueError, match="role"):
        BoundedHistory.load([{"role": "robot", "content": "x", "timestamp": 1.0}])


def test_the_dialog_lists_every_conversation(qtbot, transcripts: Path) -> None:
    application()
    dialog = ConversationsDialog(list_conversations(transcripts))
    qtbot.addWidget(dialog)
    rows = [[dialog.table.item(r, c).text() for c in range(3)] for r in range(dialog.table.rowCount())]
    assert [row[1:] for row in rows] == [["what time is it", "2"], ["my name is Ada and I like tea", "4"]]
    assert rows[0][0].startswith(time.strftime("%Y-%m-%d", time.localtime(MONDAY + DAY)))
    assert dialog.open_button.isEnabled()  # the newest is selected


def test_an_empty_folder_says_so(qtbot, private_home) -> None:
    application()
    dialog = ConversationsDialog(list_conversations(paths.transcripts_dir()))
    qtbot.addWidget(dialog)
    assert dialog.table.rowCount() == 0 and not dialog.open_button.isEnabled()
    assert not dialog.empty.isHidden()


def test_delete_asks_then_removes_the_file(qtbot, transcripts: Path) -> None:
    application()
    dialog = ConversationsDialog(list_conversations(transcripts))
    qtbot.addWidget(dialog)
    dialog.show()
    newest = dialog.selected()
    assert newest is not None and newest.path.exists()

    dialog.delete_selected()
    assert dialog.confirm_box is not None
    dialog.confirm_box.button(QMessageBox.StandardButton.No).click()
    assert newest.path.exists() and dialog.table.rowCount() == 2

    dialog.delete_selected()
    dialog.confirm_box.button(QMessageBox.StandardButton.Yes).click()
    assert not newest.path.exists()
    assert dialog.table.rowCount() == 1
    assert dialog.table.item(0, 1).text() == "my name is Ada and I like tea"


class SeededEngine:
    """Stands in for CallEngine: the seed it was made with, and whether it was started."""

    provider_label = "Local (offline)"
    model = "sandra-local"

    def __init__(self, seed: list[dict]) -> None:
        self.seed = seed
        self.state = CallState(Phase.IDLE)
        self.started = asyncio.Event()
        self.closed = False

    def subscribe(self, observer: Callable[[EngineEvent], None]) -> Callable[[], None]:
        return lambda: None

    async def start(self) -> None:
        self.state = CallState(Phase.CONNECTED)
        self.started.set()

    async def hang_up(self) -> None:
        self.state = CallState(Phase.ENDED)

    async def close(self) -> None:
        self.closed = True


async def test_open_and_continue_from_the_window(qtbot, transcripts: Path) -> None:
    application()
    made: list[SeededEngine] = []

    async def factory(settings: Settings, secrets: Secrets, seed) -> SeededEngine:
        made.append(SeededEngine(list(seed)))
        return made[-1]

    session = CallSession(Settings(), EngineBridge(), factory=factory, read=lambda _provider: Secrets(),
                          write=lambda _change: None)
    window = MainWindow(session)
    qtbot.addWidget(window)
    session.connect_call()  # a call is under way: continuing replaces it
    await asyncio.wait_for(_first_started(made), 5)

    dialog = await opened_list(window)
    dialog.table.selectRow(1)  # yesterday's
    dialog.continue_button.click()
    await asyncio.wait_for(_until(lambda: len(made) == 2 and made[1].started.is_set()), 5)

    assert made[0].closed
    assert [(m["role"], m["content"]) for m in made[1].seed] == YESTERDAY
    assert window.conversation.turns() == YESTERDAY
    assert session.engine is made[1]
    await session.close()


async def test_open_only_shows_the_turns(qtbot, transcripts: Path) -> None:
    application()
    made: list[object] = []

    async def factory(settings, secrets, seed):  # pragma: no cover - must not be called
        made.append(seed)

    window = MainWindow(CallSession(Settings(), EngineBridge(), factory=factory))
    qtbot.addWidget(window)
    dialog = await opened_list(window)
    dialog.open_button.click()
    assert window.conversation.turns() == TODAY
    await asyncio.sleep(0.05)
    assert made == []


async def opened_list(window: MainWindow) -> ConversationsDialog:
    """File → Conversations…: the list is read off the window's thread, then shown."""
    window.open_conversations()
    await asyncio.wait_for(_until(lambda: window.findChild(ConversationsDialog) is not None), 5)
    dialog = window.findChild(ConversationsDialog)
    assert dialog.isVisible()
    return dialog


async def _first_started(made: list[SeededEngine]) -> None:
    await _until(lambda: bool(made) and made[0].started.is_set())


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def test_the_real_engine_is_seeded_with_the_newest_that_fit(transcripts: Path) -> None:
    from core.call import protocol
    from gui.call_session import default_engine_factory

    long_past = [{"role": "user" if n % 2 == 0 else "assistant", "content": f"turn {n}", "timestamp": float(n)}
                 for n in range(70)]
    engine = await default_engine_factory(Settings(), Secrets(), long_past)
    try:
        kept = engine.history.messages()
        assert kept == long_past[-50:]  # the history's budget: the newest 50
        assert engine.call_engine.dialogue.conversation.history is engine.history  # what is said next joins it
        assert [(event.role, event.text) for event in protocol.reseed(kept)][:1] == [("user", "turn 20")]
    finally:
        await engine.close()

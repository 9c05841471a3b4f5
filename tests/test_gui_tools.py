"""Typed turns, tool calls and approvals in the window (issue #17), with real parts.

The window is the app's own (gui/app.py build_window: its registry, prompter and
notifier), on a qasync loop with offscreen Qt, calling either the real local server
process (typed turns, a timer that rings into a test notification service on a
private session bus) or a scripted model on a real aiortc peer (a call to open a web
page, which must wait for the user's answer), with PulseAudio's virtual devices.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from core.call.events import ToolActivity
from core.config import Settings
from core.tools.registry import Tool
from gui.app import application, build_window, install_tools, run_window
from gui.conversation_view import ConversationView
from gui.main_window import MainWindow
from gui.tool_prompt import Choice, ToolPrompt, ToolPrompter
from rig.engine_helpers import custom_settings, is_audible
from rig.hostile_server import HostileServer
from rig.server_process import TEST_SERVER_KEY, start_server
from test_gui_e2e import CONNECT_TIMEOUT_S, Speaking, close_and_wait, connected, run_on_qasync, until
from test_mcp_call import HOSTILE_KEY, ScriptedModel
from test_notifier import NotificationService, session_bus  # noqa: F401 - fixture

pytestmark = pytest.mark.timeout(150)

ANSWER_TIMEOUT_S = 25.0


async def type_turn(window: MainWindow, qtbot, text: str) -> None:
    window.text_input.setFocus()
    qtbot.keyClicks(window.text_input, text)
    qtbot.keyClick(window.text_input, Qt.Key.Key_Return)
    assert window.text_input.text() == "", "the box is cleared once the turn is sent"


def last_turns(window: MainWindow, n: int = 2) -> list[tuple[str, str]]:
    return window.conversation.turns()[-n:]


def test_typed_turns_are_answered_in_voice_and_text_and_a_timer_rings(
        qtbot, pulse, tmp_path: Path, private_home: Path, session_bus: NotificationService,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    session_bus.start()
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", session_bus.address)
    monkeypatch.setenv("SANDRA_API_KEY", TEST_SERVER_KEY)
    server = start_server(tmp_path, "--mode", "assistant")
    window = build_window(custom_settings(server.base_url, input_device="pulse", output_device="pulse"))
    qtbot.addWidget(window)
    speaking = Speaking(window)

    async def scenario() -> None:
        running = asyncio.ensure_future(run_window(window))
        await until(lambda: connected(window), CONNECT_TIMEOUT_S, "the window says connected")
        recording = pulse.record_speaker()
        try:
            await type_turn(window, qtbot, "what is three plus four")
            await until(lambda: len(window.conversation.turns()) >= 2 and "7" in last_turns(window)[-1][1],
                        ANSWER_TIMEOUT_S, "the typed question is answered in text")
            await until(lambda: speaking.finished >= 1, ANSWER_TIMEOUT_S, "the answer has been spoken")
            await asyncio.sleep(0.3)  # the null sink's monitor trails the playback a little
        finally:
            heard = recording.stop()
        assert is_audible(heard), "the answer to the typed turn was not heard on the speaker"
        assert last_turns(window)[0] == ("user", "what is three plus four")
        [calculate] = window.conversation.tools()
        assert (calculate.name, calculate.status) == ("calculate", "done")

        asked = time.monotonic()
        await type_turn(window, qtbot, "set a timer for two seconds")
        await until(lambda: "timer" in last_turns(window)[-1][1].lower() and last_turns(window)[-1][0] == "assistant",
                    ANSWER_TIMEOUT_S, "the timer is confirmed in words")
        timer = window.conversation.tools()[-1]
        assert (timer.name, timer.status) == ("set_timer", "done") and json.loads(timer.arguments)["seconds"] == 2
        await until(lambda: session_bus.calls, 15, "the timer's notification reaches the notification service")
        rang_after = time.monotonic() - asked
        signature, body = session_bus.calls[0]
        assert signature == "susssasa{sv}i" and body[3] == "Timer" and "time is up" in body[4]
        # Not before it is due: qasync's call_later is a Qt coarse timer, which may fire up to 5 % early.
        assert 2.0 * 0.95 <= rang_after < 12, rang_after
        await until(lambda: speaking.finished >= 2, ANSWER_TIMEOUT_S, "the confirmation has been spoken")

        # Typed turns are in the conversation's history (what export and re-seeding read).
        said = [m["content"] for m in window.session.engine.history.messages() if m["role"] == "user"]
        assert said[:2] == ["what is three plus four", "set a timer for two seconds"]
        await close_and_wait(window, running)

    try:
        run_on_qasync(scenario())
    finally:
        server.stop()


def test_open_url_waits_for_approval_and_does_nothing_when_refused(
        qtbot, pulse, tmp_path: Path, private_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDRA_API_KEY", HOSTILE_KEY)
    opened: list[str] = []
    saved: list[Settings] = []

    async def scenario() -> None:
        async with HostileServer(api_key=HOSTILE_KEY) as server:
            window = build_window(custom_settings(server.base_url, input_device="pulse", output_device="pulse"))
            qtbot.addWidget(window)
            install_tools(window, opener=lambda url: opened.append(url) or True)
            window.session._persist = lambda change: saved.append(change.settings)  # the session's one writer
            running = asyncio.ensure_future(run_window(window))
            await until(lambda: connected(window), CONNECT_TIMEOUT_S, "the window says connected")
            model = ScriptedModel(await server.next_peer(10))

            def prompts() -> list[ToolPrompt]:
                return [p for p in window.findChildren(ToolPrompt) if p.isVisible()]

            refused = model.call("open_url", {"url": "https://example.org/"})
            await until(lambda: prompts(), 10, "the approval prompt shows")
            await asyncio.sleep(0.5)
            assert not [e for e in model.received() if e["type"] == "conversation.item.create"], \
                "the call was answered before the user was"
            assert window.conversation.tools()[-1].status == "running…"
            assert not prompts()[0].isModal()
            qtbot.mouseClick(prompts()[0].buttons[Choice.REFUSE], Qt.MouseButton.LeftButton)
            output = await model.output_of(refused)
            assert "did not allow open_url" in output["error"] and opened == []
            assert not prompts()
            assert window.conversation.tools()[-1].status == "failed"

            allowed = model.call("open_url", {"url": "https://example.org/a"})
            await until(lambda: prompts(), 10, "the approval prompt shows again")
            qtbot.mouseClick(prompts()[0].buttons[Choice.ALWAYS], Qt.MouseButton.LeftButton)
            assert (await model.output_of(allowed)) == {"opened": "https://example.org/a"}
            await until(lambda: saved, 5, "the choice is saved")
            assert ("open_url", "always") in saved[-1].tool_approvals

            again = model.call("open_url", {"url": "https://example.org/b"})
            assert (await model.output_of(again)) == {"opened": "https://example.org/b"}
            assert not prompts() and opened == ["https://example.org/a", "https://example.org/b"]
            assert not model.shape_problems(), model.shape_problems()
            await close_and_wait(window, running)

    run_on_qasync(scenario())


def test_a_prompt_whose_wait_is_cancelled_closes(qtbot) -> None:
    application()
    window = build_window(Settings())
    qtbot.addWidget(window)
    remembered: list[tuple[str, str]] = []
    prompter = ToolPrompter(window, lambda tool, policy: remembered.append((tool, policy)))
    tool = Tool("open_url", "Open a page.", {"type": "object"}, lambda url: url, side_effect=True)

    async def scenario() -> None:
        waiting = asyncio.ensure_future(prompter.approve(tool, {"url": "https://example.org/"}))
        await until(lambda: prompter.open, 5, "the prompt shows")
        assert prompter.open[0].isVisible()
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert not prompter.open and not [p for p in window.findChildren(ToolPrompt) if p.isVisible()]

        # "For this session": no second prompt; closing a prompt is a refusal.
        session = asyncio.ensure_future(prompter.approve(tool, {}))
        await until(lambda: prompter.open, 5, "the prompt shows")
        prompter.open[0].buttons[Choice.SESSION].click()
        assert await session and await prompter.approve(tool, {}) and not prompter.open
        other = Tool("write_note", "Write.", {"type": "object"}, lambda: "", side_effect=True)
        closing = asyncio.ensure_future(prompter.approve(other, {}))
        await until(lambda: prompter.open, 5, "the prompt shows")
        prompter.open[0].reject()
        assert await closing is False and remembered == []

    run_on_qasync(scenario())
    window.allow_close()
    window.close()


def test_space_talks_unless_the_text_box_has_focus_and_enter_waits_for_a_call(qtbot, private_home) -> None:
    application()
    window = build_window(Settings())
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    qtbot.keyPress(window, Qt.Key.Key_Space)
    assert "release to send" in window.ptt.text()
    qtbot.keyRelease(window, Qt.Key.Key_Space)
    window.text_input.setFocus()
    qtbot.waitUntil(lambda: window.text_input.hasFocus())
    qtbot.keyClicks(window.text_input, "hello there")
    assert window.text_input.text() == "hello there" and "release to send" not in window.ptt.text()
    qtbot.keyClick(window.text_input, Qt.Key.Key_Return)  # no call: the text stays, a hint says why
    assert window.text_input.text() == "hello there" and "Connect the call first" in window.banner.text()
    window.allow_close()
    window.close()


def test_tool_bubbles_are_collapsed_and_open_to_arguments_and_output(qtbot) -> None:
    application()
    view = ConversationView()
    qtbot.addWidget(view)
    view.show()
    view.show_tool(ToolActivity("c1", "calculate", '{"expression": "6 * 7"}', None))
    [bubble] = view.tools()
    assert bubble.header.text() == "Tool calculate: running…" and not bubble.expanded()
    view.show_tool(ToolActivity("c1", "calculate", '{"expression": "6 * 7"}', '{"result": 42}'))
    view.show_tool(ToolActivity("c2", "stall", "{}", '{"error": "too slow"}', failed=True))
    assert [b.header.text() for b in view.tools()] == ["Tool calculate: done", "Tool stall: failed"]
    qtbot.mouseClick(bubble.header, Qt.MouseButton.LeftButton)
    assert bubble.expanded() and '"6 * 7"' in bubble.details.text() and '{"result": 42}' in bubble.details.text()
    assert view.turns() == []  # tool calls are not turns: copy and export hold what was said


def test_the_tools_tab_adds_edits_and_removes_mcp_servers(qtbot) -> None:
    from core.config import REMOVE, McpServerSettings
    from gui.settings_dialog import SettingsDialog, StoredSecrets

    application()
    old = McpServerSettings("web", transport="http", url="https://old.example/mcp", header_name="Authorization")
    dialog = SettingsDialog(Settings(mcp_servers=(old,)), StoredSecrets(mcp_headers={"web": "Bearer old"}))
    qtbot.addWidget(dialog)
    tab = dialog.tools
    assert tab.list.count() == 1
    tab.list.setCurrentRow(0)
    assert tab.url.text() == "https://old.example/mcp" and tab.header_value.text() == "Bearer old"

    tab.name.setText("files")  # a new stdio server from the form
    _select_transport(tab, "stdio")
    tab.command.setText("")
    tab.add()
    assert "Name the command" in tab.error.text() and tab.list.count() == 1
    tab.command.setText("mcp-files")
    tab.args.setText("--root '/home/me/My Documents'")
    tab.env.setPlainText("LOG=debug\n")
    tab.disabled_tools.setText("delete, move")
    tab.add()
    assert tab.list.count() == 2 and tab.error.isHidden()

    tab.list.setCurrentRow(0)  # edit the HTTP server: a new header value; then remove it
    tab.header_value.setText("Bearer new")
    tab.save_selected()
    assert dialog.change().mcp_headers == {"web": "Bearer new"}
    tab.name.setText("files")
    tab.save_selected()
    assert "no other server has" in tab.error.text()
    tab.list.setCurrentRow(0)
    tab.remove_selected()

    change = dialog.change()
    assert change.settings.mcp_servers == (McpServerSettings(
        "files", command="mcp-files", args=("--root", "/home/me/My Documents"), env=(("LOG", "debug"),),
        disabled_tools=("delete", "move")),)
    assert change.mcp_headers == {"web": REMOVE}


def _select_transport(tab, transport: str) -> None:
    tab.transport.setCurrentIndex(tab.transport.findData(transport))

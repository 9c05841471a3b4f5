"""The window end to end: real engine, real local server process, PulseAudio, offscreen Qt.

Each test runs its scenario on a qasync loop over the test's QApplication, as the app
itself does (one thread for Qt and asyncio), and the window makes its engine as in
`python main.py`: on connect, with the key from the keyring, on a loop of its own
(gui/engine_thread.py). Qt input goes through QTest (pytest-qt's qtbot) from inside the
coroutine; waiting is asyncio's, never a nested Qt loop.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from PySide6.QtCore import Qt

from core.config import Settings, set_api_key
from rig.engine_helpers import custom_settings, is_audible
from gui import event_loop
from gui.app import application, build_window, run_window
from gui.engine_thread import ThreadedEngine
from gui.main_window import MainWindow
from memory_keyring import use_memory_keyring
from rig.pulse_rig import PulseRig
from rig.server_process import TEST_SERVER_KEY, ServerProcess, start_server
from rig.speech_samples import make_speech_wav, read_wav_int16

pytestmark = pytest.mark.timeout(150)

QUESTION = "what time is it"
MODE = "assistant"  # the server's mode that hears, answers and speaks
# Long enough for recognition and synthesis on 2 cores, short enough to fail fast.
ANSWER_TIMEOUT_S = 20.0
CONNECT_TIMEOUT_S = 30.0
COUNTDOWN = re.compile(r"^Reconnecting in \d+ s, attempt 1 of 5$")


def run_on_qasync(scenario: Awaitable[None]) -> None:
    """Run a coroutine on a qasync loop (Qt and asyncio on this thread), then close the loop."""
    with asyncio.Runner(loop_factory=lambda: event_loop.new_loop(application())) as runner:
        runner.run(scenario)


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting until {what}")
        await asyncio.sleep(0.05)


def connected(window: MainWindow) -> bool:
    return window.status_line.text().startswith("Connected")


def latency_points(window: MainWindow) -> int:
    plot = window.latency_plot
    return 0 if plot is None or plot.points.xData is None else len(plot.points.xData)


@pytest.fixture(scope="module")
def question(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The spoken question at 48 kHz, with a little silence after it (the rig's tail)."""
    samples, rate = read_wav_int16(make_speech_wav(QUESTION, tmp_path_factory.mktemp("speech") / "q.wav"))
    assert rate == 48000
    return np.concatenate([samples, np.zeros(rate // 5, dtype=np.int16)])


class Speaking:
    """Counts the assistant's finished answers (speaking went True, then False)."""

    def __init__(self, window: MainWindow) -> None:
        self.finished = 0
        self._speaking = False
        window.session.bridge.assistant_speaking.connect(self._on)

    def _on(self, speaking: bool) -> None:
        if self._speaking and not speaking:
            self.finished += 1
        self._speaking = speaking


async def push_to_talk_turn(window: MainWindow, pulse: PulseRig, speech: np.ndarray,
                            press: Callable[[], None], release: Callable[[], None], speaking: Speaking) -> np.ndarray:
    """Hold, speak into the virtual microphone, let go; returns what the speaker played."""
    turns, points, answers = len(window.conversation.turns()), latency_points(window), speaking.finished
    recording = pulse.record_speaker()
    try:
        press()
        assert "release to send" in window.ptt.text()
        # Off the loop: play_into_mic blocks in its pipe write for about as long as the speech
        # lasts, and a stalled loop would starve the call's outgoing audio track.
        await asyncio.get_running_loop().run_in_executor(None, lambda: pulse.play_into_mic(speech).wait())
        await asyncio.sleep(0.3)  # the rig's own latency: the last words are still on their way
        release()
        await until(lambda: len(window.conversation.turns()) >= turns + 2, ANSWER_TIMEOUT_S,
                    "the question and the answer are in the conversation")
        await until(lambda: latency_points(window) == points + 1, ANSWER_TIMEOUT_S, "a latency point is drawn")
        await until(lambda: speaking.finished > answers, ANSWER_TIMEOUT_S, "the answer has been spoken")
        await asyncio.sleep(0.3)  # the null sink's monitor trails the playback a little
    finally:
        heard = recording.stop()
    return heard


def mouse(window: MainWindow, qtbot) -> tuple[Callable[[], None], Callable[[], None]]:
    return (lambda: qtbot.mousePress(window.ptt, Qt.MouseButton.LeftButton),
            lambda: qtbot.mouseRelease(window.ptt, Qt.MouseButton.LeftButton))


def space(window: MainWindow, qtbot) -> tuple[Callable[[], None], Callable[[], None]]:
    return (lambda: qtbot.keyPress(window, Qt.Key.Key_Space), lambda: qtbot.keyRelease(window, Qt.Key.Key_Space))


def assert_answered(turns: list[tuple[str, str]]) -> None:
    """The newest two turns: the question as heard, then a spoken answer with the time in it."""
    (user_role, user_text), (assistant_role, assistant_text) = turns[-2:]
    assert (user_role, assistant_role) == ("user", "assistant"), turns
    assert user_text.lower().strip(" ?.") == QUESTION, turns
    assert any(ch.isdigit() for ch in assistant_text), f"the answer carries no time: {assistant_text!r}"


def assert_lines_match_telemetry(window: MainWindow, turns: int) -> None:
    engine = window.session.engine
    assert engine is not None
    stats = engine.telemetry.stats("response_latency")
    assert stats["count"] == turns
    assert window.latency_plot is not None
    assert window.latency_plot.line_values() == (stats["p95"], stats["p99"])


@dataclass
class Call:
    """A window on a real engine, calling a server process this test started."""

    server: ServerProcess
    window: MainWindow
    speaking: Speaking


@pytest.fixture
def call(qtbot, pulse: PulseRig, tmp_path: Path, private_home: Path):
    server = start_server(tmp_path, "--mode", MODE)
    settings = custom_settings(server.base_url, input_device="pulse", output_device="pulse")
    with use_memory_keyring():
        set_api_key(settings.provider, TEST_SERVER_KEY)  # as the settings dialog keeps it
        window = build_window(settings)
        qtbot.addWidget(window)
        the_call = Call(server, window, Speaking(window))
        yield the_call
    the_call.server.stop()  # the latest one: a test may have restarted it


async def close_and_wait(window: MainWindow, running: asyncio.Future[int]) -> None:
    window.close()
    assert await asyncio.wait_for(running, 15) == 0
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not leftover, f"tasks still pending after the window closed: {leftover}"


async def space_turn_then_close(call: Call, pulse: PulseRig, speech: np.ndarray, qtbot,
                                running: asyncio.Future[int]) -> None:
    """A second turn, by the space bar, after one by the mouse; then the window closes."""
    window = call.window
    heard = await push_to_talk_turn(window, pulse, speech, *space(window, qtbot), call.speaking)
    assert is_audible(heard), "the answer to the space-bar turn was not heard on the speaker"
    assert len(window.conversation.turns()) == 4
    assert_answered(window.conversation.turns())
    assert_lines_match_telemetry(window, 2)
    await close_and_wait(window, running)


def test_mouse_and_space_turns_are_answered_heard_and_plotted(call: Call, qtbot, pulse, question):
    window = call.window

    async def scenario() -> None:
        running = asyncio.ensure_future(run_window(window))
        await until(lambda: connected(window), CONNECT_TIMEOUT_S, "the window says connected")
        assert isinstance(window.session.engine, ThreadedEngine)  # the app's own: on a loop of its own
        heard = await push_to_talk_turn(window, pulse, question, *mouse(window, qtbot), call.speaking)
        assert is_audible(heard), "the answer to the mouse turn was not heard on the speaker"
        assert_answered(window.conversation.turns())
        assert_lines_match_telemetry(window, 1)
        await space_turn_then_close(call, pulse, question, qtbot, running)

    run_on_qasync(scenario())


def test_killed_server_shows_the_countdown_then_the_conversation_goes_on(call: Call, qtbot, pulse, question,
                                                                          tmp_path: Path):
    window, port = call.window, call.server.port

    async def scenario() -> None:
        running = asyncio.ensure_future(run_window(window))
        await until(lambda: connected(window), CONNECT_TIMEOUT_S, "the window says connected")
        await push_to_talk_turn(window, pulse, question, *mouse(window, qtbot), call.speaking)
        before = window.conversation.turns()
        assert_answered(before)
        os.kill(call.server.pid, signal.SIGKILL)
        call.server.proc.wait(5)
        await until(lambda: COUNTDOWN.match(window.status_line.text()) is not None, 10,
                    "the status line counts down to the first reconnection attempt")
        # Blocking start (it waits for the server's "listening" line): off the loop.
        call.server = await asyncio.get_running_loop().run_in_executor(
            None, lambda: start_server(tmp_path, "--mode", MODE, "--port", str(port)))
        await until(lambda: connected(window), CONNECT_TIMEOUT_S, "the window says connected again")
        assert window.conversation.turns() == before, "the earlier conversation is no longer shown"
        await space_turn_then_close(call, pulse, question, qtbot, running)
        assert window.conversation.turns()[:2] == before

    run_on_qasync(scenario())


def serve_children() -> list[int]:
    """Running child processes of this test process that are `main.py serve` (a local server)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")  # empty for a zombie: it runs no more
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
        if ppid == os.getpid() and b"serve" in argv:
            found.append(int(entry.name))
    return found


def test_closing_the_window_hangs_up_and_stops_the_embedded_server(qtbot, pulse, private_home, caplog, capfd):
    assert serve_children() == [], "a local server from an earlier test is still running"
    # First-launch settings: the local provider, whose server the engine starts by itself.
    window = build_window(Settings(input_device="pulse", output_device="pulse"))
    qtbot.addWidget(window)

    async def scenario() -> None:
        running = asyncio.ensure_future(run_window(window))
        await until(lambda: connected(window), CONNECT_TIMEOUT_S, "the window says connected")
        assert len(serve_children()) == 1, "the window should have started exactly one local server"
        await close_and_wait(window, running)
        assert serve_children() == [], "the local server outlived the window"

    run_on_qasync(scenario())
    gc.collect()  # an abandoned task says "destroyed but pending" when it is collected
    logged = caplog.text + capfd.readouterr().err
    assert "Task was destroyed but it is pending" not in logged, logged[-3000:]
    assert not window.isVisible()
